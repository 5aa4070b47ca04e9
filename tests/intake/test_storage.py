"""Storage checks against moto's S3 server: each broken input gives its own code; the estimate of a
known input is worked out by hand."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import pytest

from stamen.inputs import (
    IntakeSettings,
    StorageChecker,
    objects,
    open_object_store,
    s3_get,
    validate_imported,
)
from stamen.inputs.submission import import_for_tenant
from stamen.settings import Settings
from stamen.worksets import ValidationReport
from tests.intake.s3kit import GuardedS3, S3Lab
from tests.worksets.conftest import fastq_records, gz


async def check(
    s3lab: S3Lab,
    spec: dict[str, Any],
    *,
    intake: IntakeSettings | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
) -> ValidationReport:
    settings = Settings(AWS_ENDPOINT_URL=endpoint or s3lab.url, AWS_REGION="us-west-2", region="us-west-2")
    intake = intake or IntakeSettings(storage_timeout_seconds=2)
    async with open_object_store(settings, intake) as store:
        return await validate_imported(
            import_for_tenant(spec, tenant="acme"),
            checker=StorageChecker(store, intake),
            cluster_region="us-west-2",
            rights=None,
            dry_run=dry_run,
        )


def codes(report: ValidationReport) -> set[str]:
    return {f.code for f in report.findings}


async def test_good_inputs_pass_with_sizes_and_an_estimate(s3lab: S3Lab) -> None:
    report = await check(s3lab, s3lab.spec(samples=2))
    assert report.ok and report.findings == [], report.findings
    assert report.estimate is not None and report.estimate.unsized_inputs == []
    assert report.note == "Reference files were not checked: STAMEN_REFERENCE_LOCATION is not set."


def _put(body: bytes) -> Callable[[S3Lab, str], object]:
    return lambda lab, key: lab.put(key, body)


# code -> how to (re)place R2 of a good spec so that the storage checks give that code (None: absent).
# Together with tests/worksets/test_corpus.py, tests/intake/test_codes.py checks every code is produced.
STORAGE_CORPUS: dict[str, Callable[[S3Lab, str], object] | None] = {
    "SNF-OBJ-001": None,  # absent object
    "SNF-OBJ-002": _put(b""),  # empty object
    "SNF-OBJ-005": lambda lab, key: lab.client.put_object(  # archived: HEAD says GLACIER
        Bucket=lab.bucket, Key=key, Body=gz(fastq_records(50, mate=2)), StorageClass="GLACIER"
    ),
    "SNF-GZ-003": _put(gz(fastq_records(50, mate=2))[:-40]),  # truncated gzip
    "SNF-FQ-003": _put(gz(fastq_records(3, mate=2)[:-30] + b"\n")),  # last quality cut short
    "SNF-PAIR-001": _put(gz(b"@other/2\nACGT\n+\nIIII\n")),  # mates out of sync
    "SNF-GZ-001": _put(b"not gzip at all"),
}


@pytest.mark.parametrize("code", sorted(STORAGE_CORPUS))
async def test_each_broken_input_has_its_own_code(s3lab: S3Lab, code: str) -> None:
    spec = s3lab.spec()
    r2 = str(spec["samples"][0]["r2"])
    key = r2.split("/", 3)[3]
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key=key)
    place = STORAGE_CORPUS[code]
    if place is not None:
        place(s3lab, key)
    report = await check(s3lab, spec)
    assert code in codes(report), report.findings
    assert not report.ok
    assert next(f for f in report.findings if f.code == code).field.startswith("samples[0]")


async def test_access_denied_by_an_iam_policy(guarded_s3: GuardedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto enforcing IAM: the validator's user may read the bucket but not R2 (s3:GetObject denied)."""
    lab = S3Lab(guarded_s3.url)
    spec = lab.spec()
    r2 = str(spec["samples"][0]["r2"])
    guarded_s3.deny_get_object(r2)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", guarded_s3.user_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", guarded_s3.user_secret)
    report = await check(lab, spec)
    assert [(f.code, f.field) for f in report.findings] == [("SNF-OBJ-003", "samples[0].r2")]
    assert r2 in report.findings[0].message and "access denied" in report.findings[0].message
    assert report.estimate is not None and report.estimate.unsized_inputs == [r2]


async def test_quality_shorter_than_sequence(s3lab: S3Lab) -> None:
    spec = s3lab.spec()
    key = str(spec["samples"][0]["r1"]).split("/", 3)[3]
    s3lab.put(key, gz(b"@r1/1\nACGTACGT\n+\nIIII\n"))
    report = await check(s3lab, spec)
    assert "SNF-FQ-003" in codes(report)


async def test_missing_bucket_and_unreachable_storage(s3lab: S3Lab) -> None:
    spec = s3lab.spec(samples=1)
    spec["samples"][0]["r1"] = "s3://no-such-bucket-stamen/x_R1.fastq.gz"
    assert "SNF-OBJ-004" in codes(await check(s3lab, spec))
    unreachable = await check(
        s3lab, s3lab.spec(), endpoint="http://127.0.0.1:9", intake=IntakeSettings(storage_timeout_seconds=0.5)
    )
    assert codes(unreachable) == {"SNF-OBJ-006"}


async def test_dry_run_touches_no_storage(s3lab: S3Lab) -> None:
    # An unreachable endpoint: any storage call would show up as SNF-OBJ-006.
    report = await check(
        s3lab, s3lab.spec(reference_genome="GRCh99"), endpoint="http://127.0.0.1:9", dry_run=True
    )
    assert codes(report) == {"VAL-REF-001"} and report.dry_run and report.estimate is None
    assert report.note is not None and "no storage was accessed" in report.note


async def test_reference_files_are_checked_under_the_configured_location(s3lab: S3Lab) -> None:
    intake = IntakeSettings(reference_location=f"s3://{s3lab.bucket}/refs/{{daylily_name}}/")
    for name in ("Homo_sapiens_assembly38.fasta", "Homo_sapiens_assembly38.fasta.fai"):
        s3lab.put(f"refs/GRCh38/{name}", b">chr1\nACGT\n")
    report = await check(s3lab, s3lab.spec(), intake=intake)
    [missing] = [f for f in report.findings if f.code == "VAL-REF-002"]
    assert missing.field == "reference_genome" and "6 of 8" in missing.message and ".dict" in missing.message
    for name in (".dict", ".fasta.amb", ".fasta.ann", ".fasta.bwt", ".fasta.pac", ".fasta.sa"):
        key = "refs/GRCh38/Homo_sapiens_assembly38" + name
        s3lab.put(key, b"x")
    assert (await check(s3lab, s3lab.spec(), intake=intake)).ok


def fixed_fastq(records: int, mate: int) -> bytes:
    # Every record is 9 + 101 + 2 + 101 = 213 bytes for 100 bases: 2.13 FASTQ bytes per base.
    return b"".join(
        b"@R%04d/%d\n" % (i, mate) + b"ACGT" * 25 + b"\n+\n" + b"I" * 100 + b"\n" for i in range(records)
    )


async def test_estimate_of_a_known_input_matches_the_hand_computed_value(s3lab: S3Lab) -> None:
    # Two gzip FASTQs of 300 reads x 100 bases in an eu-west-1 bucket, run on a us-west-2 cluster.
    eu = s3lab.new_bucket("eu-west-1")
    r1_gz, r2_gz = gzip.compress(fixed_fastq(300, 1), mtime=0), gzip.compress(fixed_fastq(300, 2), mtime=0)
    assert len(r1_gz) < 64 * 1024  # read whole: the sniffed ratio is exactly raw/compressed
    spec = {
        "name": "est",
        "pipeline": "fastq-qc",
        "reference_genome": "hg38",
        "export_uri": f"s3://{eu}/out/",
        "samples": [
            {
                "id": "S1",
                "platform": "ILMN",
                "r1": s3lab.put("a/S1_R1.fastq.gz", r1_gz, eu),
                "r2": s3lab.put("a/S1_R2.fastq.gz", r2_gz, eu),
            }
        ],
    }
    report = await check(s3lab, spec)
    assert report.ok, report.findings
    cost = report.estimate
    assert cost is not None and cost.region == "us-west-2"
    # bases = size x ratio / bytes-per-base = (300 x 213) / 2.13 = 30,000 per file.
    assert cost.gbases == pytest.approx(60_000 / 1e9, rel=1e-9)
    # fastq-qc: 0.5 fixed vCPU-h + 0.05 per Gbase; 10 min + vCPU-h / 32 vCPUs.
    vcpu_hours = 0.5 + 0.00006 * 0.05
    assert cost.vcpu_hours == pytest.approx(vcpu_hours, rel=1e-12)
    duration = 10 + vcpu_hours / 32 * 60
    assert cost.duration_minutes == pytest.approx(duration, rel=1e-12)
    input_gb = (len(r1_gz) + len(r2_gz)) / 1e9
    assert cost.input_gb == pytest.approx(input_gb) and cost.storage_gb == pytest.approx(input_gb * 1.2)
    # The bucket is in eu-west-1: every input byte crosses regions at $0.02/GB.
    assert cost.transfer_gb == pytest.approx(input_gb) and cost.transfer_usd == pytest.approx(input_gb * 0.02)
    storage_usd = input_gb * 1.2 * 0.14 * (duration / 60) / 730
    assert cost.cost_usd_median == pytest.approx(vcpu_hours * 0.016 + storage_usd + input_gb * 0.02, rel=1e-9)
    assert cost.cost_usd_low == pytest.approx(
        vcpu_hours * 0.016 * 0.7 + storage_usd + input_gb * 0.02, rel=1e-9
    )
    assert cost.cost_usd_high == pytest.approx(
        vcpu_hours * 0.0425 * 1.3 + storage_usd + input_gb * 0.02, rel=1e-9
    )


async def test_a_bucket_region_is_asked_of_s3_once_and_kept(s3lab: S3Lab) -> None:
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2", region="us-west-2")
    eu = s3lab.new_bucket("eu-west-1")
    async with open_object_store(settings, IntakeSettings(storage_timeout_seconds=2)) as store:
        asked: list[str] = []
        real = store.client.get_bucket_location

        async def counting(**kwargs: Any) -> Any:
            asked.append(kwargs["Bucket"])
            return await real(**kwargs)

        store.client.get_bucket_location = counting
        assert [await store.bucket_region(b) for b in (s3lab.bucket, eu, s3lab.bucket, eu)] == [
            "us-west-2",
            "eu-west-1",
            "us-west-2",
            "eu-west-1",
        ]
        assert asked == [s3lab.bucket, eu]  # the second validation's answers were kept
        assert await store.bucket_region("no-such-bucket-here") is None
        assert await store.bucket_region("no-such-bucket-here") is None
        assert asked[2:] == ["no-such-bucket-here"] * 2  # no answer: asked again
        store.REGION_KEPT_SECONDS = 0.0
        assert await store.bucket_region(eu) == "eu-west-1"
        assert asked[4:] == [eu]  # kept for a while only


async def test_a_good_input_costs_one_ranged_get_and_an_empty_one_is_still_reported_empty(
    s3lab: S3Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its size and class come with its first bytes (a HEAD and a GET before); where the GET cannot give
    them (an empty object), the HEAD says what the object is, as before."""
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2", region="us-west-2")
    intake = IntakeSettings(storage_timeout_seconds=2)
    spec = s3lab.spec(samples=1)
    async with open_object_store(settings, intake) as store:
        asked: list[str] = []
        for operation in ("head_object", "get_object"):
            real = getattr(store.client, operation)

            async def counting(*, _real: Any = real, _op: str = operation, **kwargs: Any) -> Any:
                asked.append(_op)
                return await _real(**kwargs)

            setattr(store.client, operation, counting)
        lean = s3_get.lean_request  # what objects calls

        async def lean_counted(*args: Any, **kwargs: Any) -> Any:
            asked.append(f"lean {args[1]}")  # (session, method, ...)
            return await lean(*args, **kwargs)

        monkeypatch.setattr(objects, "lean_request", lean_counted)
        imported = import_for_tenant(spec, tenant="acme").spec
        assert imported is not None
        report = await StorageChecker(store, intake).check(imported, None)
        assert report.findings == [] and len(report.sizes) == 2 and all(report.sizes.values())
        assert asked == ["get_object", "get_object"]  # one per input: no HEAD
        report = await StorageChecker(store, intake).check(imported, None)
        assert report.findings == [] and len(report.sizes) == 2 and all(report.sizes.values())
        # The bucket's address learned: one GET per input still, without botocore (stamen.inputs.s3_get).
        assert asked[2:] == ["lean GET", "lean GET"]
        empty = s3lab.put("empty_R1.fastq.gz", b"")
        asked.clear()
        sample = spec["samples"][0]
        imported = import_for_tenant({**spec, "samples": [{**sample, "r1": empty}]}, tenant="acme").spec
        assert imported is not None
        report = await StorageChecker(store, intake).check(imported, None)
        assert codes_of(report.findings) == {"SNF-OBJ-002"} and report.sizes[empty] == 0
        # The empty one: the lean GET refused (416) is asked again through botocore, refused, then the HEAD
        # (without botocore: the bucket's address is known).
        assert sorted(asked) == ["get_object", "lean GET", "lean GET", "lean HEAD"]


def codes_of(findings: list[Any]) -> set[str]:
    return {f.code for f in findings}
