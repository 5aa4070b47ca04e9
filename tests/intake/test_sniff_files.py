"""Broken FASTQs that used to pass, now caught on real files (tests/worksets/fixtures/fastq: copied from public
repositories or made by bgzip, gzip and samtools) in real S3 (moto): a cut past the sniffed start (BGZF and
plain gzip, located), Windows line endings, Phred+64 qualities, and BAM or FASTA named .fastq.gz. The sniff
window is 1 KiB here, so every cut lies well past it. Also through the validator service, the HTTP validate
endpoint and `stamen validate`."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stamen.inputs import IntakeSettings
from stamen.worksets.sniff import BGZF_EOF
from tests.intake.s3kit import S3Lab
from tests.intake.test_storage import check

FASTQ = Path(__file__).resolve().parents[1] / "worksets" / "fixtures" / "fastq"
WINDOW = IntakeSettings(storage_timeout_seconds=2, sniff_bytes=1024)


def fixture(name: str) -> bytes:
    return (FASTQ / name).read_bytes()


def bulk_fastq() -> bytes:
    """What bulk.fastq.* were made from (README.md)."""
    return gzip.decompress(fixture("bulk.fastq.gz"))


def test_the_made_files_hold_the_same_reads() -> None:
    text = bulk_fastq()
    assert len(text) == 800_490 and text.count(b"\n") == 16_000
    assert gzip.decompress(fixture("bulk.fastq.bgz")) == text and fixture("bulk.fastq.bgz").endswith(BGZF_EOF)


BGZ = fixture("bulk.fastq.bgz")
GZ = fixture("bulk.fastq.gz")
BAM = fixture("bulk.bam")

# case -> (R1's object name, its bytes, the code expected on samples[0].r1 (None: clean), text in the message)
CASES: dict[str, tuple[str, bytes, str | None, str]] = {
    "BGZF, whole": ("a_R1.fastq.gz", BGZ, None, ""),
    "BGZF, cut in a block": (
        "a_R1.fastq.gz",
        BGZ[: len(BGZ) * 2 // 3],
        "SNF-GZ-003",
        "inside the BGZF block that starts at byte",
    ),
    "BGZF, cut at the EOF block": (
        "a_R1.fastq.gz",
        BGZ[: -len(BGZF_EOF)],
        "SNF-GZ-005",
        "end-of-file marker",
    ),
    "gzip, whole": ("a_R1.fastq.gz", GZ, None, ""),
    "gzip, two members (cat a.gz b.gz)": (
        "a_R1.fastq.gz",
        GZ + gzip.compress(fixture("example.fastq")),
        None,
        "",
    ),
    "gzip, cut": (
        "a_R1.fastq.gz",
        GZ[: len(GZ) * 7 // 10],
        "SNF-GZ-003",
        "in the middle of the gzip member that starts at byte 0",
    ),
    "CRLF": (
        "a_R1.fastq.gz",
        gzip.compress(fixture("example_dos.fastq")),
        "SNF-FQ-008",
        "Windows (CRLF) line endings",
    ),
    "Phred+64": ("a_R1.fastq.gz", gzip.compress(fixture("solexa_example.fastq")), "SNF-FQ-009", "Phred+64"),
    "BAM named .fastq.gz": ("a_R1.fastq.gz", BAM, "SNF-FMT-002", "the content is BAM"),
    "FASTA named .fastq.gz": (
        "a_R1.fastq.gz",
        gzip.compress(fixture("example.fasta")),
        "SNF-FMT-002",
        "the content is FASTA",
    ),
    "FASTQ named .bam": ("a.bam", GZ, "SNF-FMT-002", "named as BAM, but the content is gzipped fastq"),
    "BAM, cut": ("a.bam", BAM[: len(BAM) // 2], "SNF-GZ-003", "inside the BGZF block"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_real_files_broken_past_the_window(s3lab: S3Lab, case: str) -> None:
    name, body, code, says = CASES[case]
    uri = s3lab.put(f"reads/{name}", body)
    sample: dict[str, Any] = {"id": "S1", "platform": "ILMN"}
    if name.endswith(".bam"):
        sample |= {"platform": "PACBIO", "alignments": [{"uri": uri, "format": "bam"}]}
        field = "samples[0].alignments[0].uri"
    else:
        sample["r1"], field = uri, "samples[0].r1"
    spec = {
        "name": "sniff",
        "pipeline": "germline",
        "samples": [sample],
        "export_uri": f"s3://{s3lab.bucket}/out/",
    }
    report = await check(s3lab, spec, intake=WINDOW)
    found = [f for f in report.findings if f.field == field]
    if code is None:
        assert found == [], found
        return
    assert [f.code for f in found] == [code], found
    assert says in found[0].message, found[0].message
    assert report.ok is (found[0].severity == "warning")


async def test_a_plain_gzip_too_large_to_verify_is_said_so(s3lab: S3Lab) -> None:
    """The trailer of a cut plain-gzip object does not vouch for its end, and with the whole-object check
    limited below its size the report says it could not verify it (SNF-GZ-006) instead of passing it."""
    uri = s3lab.put("reads/a_R1.fastq.gz", GZ[: len(GZ) * 7 // 10])
    spec = {
        "name": "sniff",
        "samples": [{"id": "S1", "platform": "ONT", "r1": uri}],
        "export_uri": f"s3://{s3lab.bucket}/out/",
    }
    limited = WINDOW.model_copy(update={"gzip_verify_max_bytes": 4096})
    report = await check(s3lab, spec, intake=limited)
    [found] = [f for f in report.findings if f.field == "samples[0].r1"]
    assert (found.code, found.severity) == ("SNF-GZ-006", "warning") and "4096 bytes" in found.message


def test_stamen_validate_names_the_cut_and_the_encoding(s3lab: S3Lab, tmp_path: Path) -> None:
    r1 = s3lab.put("reads/b_R1.fastq.gz", BGZ[: len(BGZ) // 2])
    r2 = s3lab.put("reads/b_R2.fastq.gz", gzip.compress(fixture("solexa_example.fastq")))
    spec = tmp_path / "b.json"
    spec.write_text(
        json.dumps(
            {
                "name": "b",
                "samples": [{"id": "S1", "platform": "ILMN", "r1": r1, "r2": r2}],
                "export_uri": f"s3://{s3lab.bucket}/out/",
            }
        )
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3lab.url,
        "STAMEN_SNIFF_BYTES": "1024",
        "STAMEN_STATE_DIR": str(tmp_path / "no-stack"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "stamen", "validate", str(spec), "--tenant", "acme", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    found = {f["field"]: f for f in json.loads(out.stdout)["findings"]}
    assert (
        found["samples[0].r1"]["code"] == "SNF-GZ-003"
        and "inside the BGZF block" in found["samples[0].r1"]["message"]
    )
    assert (
        found["samples[0].r2"]["code"] == "SNF-FQ-009"
        and "seqtk seq -Q64 -V" in found["samples[0].r2"]["fix"]
    )
