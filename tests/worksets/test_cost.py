from __future__ import annotations

import pytest

from stamen.worksets import SniffResult, WorksetSpec, estimate, validate_spec
from stamen.worksets.cost import bucket_region_from_name

R1 = "s3://reads-a/S1_R1.fastq.gz"
R2 = "s3://reads-a/S1_R2.fastq.gz"


def _spec(**changes: object) -> WorksetSpec:
    fields: dict[str, object] = {
        "name": "ws1",
        "tenant": "lsmc",
        "pipeline": "germline",
        "export_uri": "s3://results-bucket/ws1/",
        "samples": [{"id": "S1", "platform": "ILMN", "r1": R1, "r2": R2}],
    }
    fields.update(changes)
    return WorksetSpec.model_validate(fields)


def test_estimate_matches_the_hand_computed_value() -> None:
    sniffed = SniffResult(
        format="fastq",
        gzip=True,
        sample_bytes=65536,
        compression_ratio=4.0,
        text_bytes_per_base=2.5,
        reads_sampled=100,
        mean_read_length=150,
    )
    result = estimate(
        _spec(),
        object_sizes={R1: 2_000_000_000, R2: 2_000_000_000},
        sniffs={R1: sniffed, R2: sniffed},
        cluster_region="us-west-2",
        bucket_regions={"reads-a": "eu-west-1"},
    )
    # Bases: each file 2e9 bytes x 4.0 (compression ratio) / 2.5 (FASTQ bytes per base) = 3.2e9 bases.
    assert result.gbases == pytest.approx(6.4)
    # germline profile: 4.0 fixed vCPU-h + 6.4 Gbases x 1.2 vCPU-h/Gbase = 11.68 vCPU-h
    assert result.vcpu_hours == pytest.approx(11.68)
    # 30 fixed minutes + 11.68 vCPU-h / 192 vCPUs x 60 = 30 + 3.65 = 33.65 minutes
    assert result.duration_minutes == pytest.approx(33.65)
    # storage: 4.0 GB input x 3.0 multiplier = 12 GB, for 33.65 min at 0.14 $/GB-month (730 h)
    assert result.storage_gb == pytest.approx(12.0)
    storage_usd = 12.0 * 0.14 * (33.65 / 60) / 730  # = 0.0012907
    assert result.storage_usd == pytest.approx(storage_usd)
    # eu-west-1 bucket -> us-west-2 cluster: 4.0 GB x 0.02 $/GB = 0.08 $
    assert (result.transfer_gb, result.transfer_usd) == (pytest.approx(4.0), pytest.approx(0.08))
    # compute: median 11.68 x 0.016 spot = 0.18688; low 0.18688 x 0.7 = 0.130816;
    # high 11.68 x 0.0425 on-demand x 1.3 = 0.64532
    assert result.cost_usd_median == pytest.approx(0.18688 + storage_usd + 0.08)
    assert result.cost_usd_low == pytest.approx(0.130816 + storage_usd + 0.08)
    assert result.cost_usd_high == pytest.approx(0.64532 + storage_usd + 0.08)
    assert result.peak_memory_gib == 64


def test_defaults_region_from_bucket_name_and_unsized_inputs() -> None:
    assert bucket_region_from_name("lsmc-dayoa-omics-analysis-us-west-2") == "us-west-2"
    assert bucket_region_from_name("reads-a") is None
    spec = _spec(
        samples=[
            {
                "id": "S1",
                "platform": "ILMN",
                "r1": "s3://data-us-east-1/a_R1.fastq.gz",
                "r2": "s3://data-us-east-1/a_R2.fastq.gz",
            }
        ]
    )
    result = estimate(
        spec, object_sizes={"s3://data-us-east-1/a_R1.fastq.gz": 1_000_000_000}, cluster_region="us-east-1"
    )
    # Unsniffed gzip FASTQ: defaults 3.5 compression ratio, 2.3 bytes per base -> 1e9 x 3.5 / 2.3 bases.
    assert result.gbases == pytest.approx(3.5 / 2.3)
    assert result.transfer_gb == 0
    assert result.unsized_inputs == ["s3://data-us-east-1/a_R2.fastq.gz"]
    assert any("without a known size" in caveat for caveat in result.caveats)


def test_estimate_over_budget_is_a_warning() -> None:
    spec = _spec(max_cost_usd=0.01)
    result = estimate(spec, object_sizes={R1: 5_000_000_000, R2: 5_000_000_000})
    report = validate_spec(spec, estimate=result)
    assert [f.code for f in report.findings] == ["VAL-COST-001"]
    assert report.estimate == result
