"""`stamen validate | schema | generate-yaml` and the WorksetValidator Python API, against moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stamen.cli import app
from stamen.cli_intake import register
from stamen.inputs import IntakeSettings, WorksetValidator
from stamen.settings import Settings
from tests.intake.s3kit import S3Lab, write_spec

register(app)
runner = CliRunner()


def stamen(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_validate_exits_non_zero_on_errors_and_zero_when_valid(tmp_path: Path, s3lab: S3Lab) -> None:
    env = {"AWS_ENDPOINT_URL": s3lab.url, "STAMEN_STATE_DIR": str(tmp_path / "no-stack")}
    good = write_spec(tmp_path / "good.yaml", s3lab.spec())
    code, out = stamen("validate", str(good), "--tenant", "acme", env=env)
    assert code == 0, out
    assert "valid - 0 error(s)" in out and "estimate (fastq-qc, us-west-2)" in out
    spec = s3lab.spec()
    spec["samples"][0]["r2"] = spec["samples"][0]["r2"].replace("reads/S1_R2", "reads/gone/S1_R2")
    bad = write_spec(tmp_path / "bad.yaml", spec)
    code, out = stamen("validate", str(bad), "--tenant", "acme", "--json", env=env)
    assert code == 1
    report = json.loads(out)
    assert not report["ok"] and [f["code"] for f in report["findings"]] == ["SNF-OBJ-001"]
    # Dry run: storage is not read, so the missing object is not noticed, and the report says so.
    code, out = stamen("validate", str(bad), "--tenant", "acme", "--dry-run", env=env)
    assert code == 0 and "no storage was accessed" in out


def test_validate_strict_and_unreadable_input(tmp_path: Path) -> None:
    spec = {
        "name": "w",
        "tenant": "acme",
        "samples": [{"id": "S1", "platform": "ILMN", "r1": "s3://lab-bucket/S1_R1.fastq.gz"}],
    }
    path = write_spec(tmp_path / "w.yaml", spec)
    assert stamen("validate", str(path), "--dry-run")[0] == 0  # R2 missing on Illumina: a warning
    code, out = stamen("validate", str(path), "--dry-run", "--strict")
    assert code == 1 and "VAL-PAIR-002" in out
    assert stamen("validate", str(tmp_path / "nope.yaml"))[0] == 2
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    code, out = stamen("validate", str(tmp_path / "list.yaml"), "--dry-run")
    assert code == 1 and "VAL-INPUT-004" in out


def test_validate_a_daylily_folder_in_s3_and_on_disk(tmp_path: Path, s3lab: S3Lab) -> None:
    env = {"AWS_ENDPOINT_URL": s3lab.url, "STAMEN_STATE_DIR": str(tmp_path / "no-stack")}
    folder = s3lab.drop_folder("run9")
    code, out = stamen("validate", f"s3://{s3lab.bucket}/{folder}", "--tenant", "acme", "--json", env=env)
    assert code == 0, out
    assert json.loads(out)["estimate"]["pipeline"] == "fastq-qc"
    local = tmp_path / "run9"
    local.mkdir()
    for name in ("daylily_work.yaml", "stage_samples.tsv", "daylily_info.yaml"):
        (local / name).write_bytes(s3lab.get(folder + name))
    assert stamen("validate", str(local), "--tenant", "acme", env=env)[0] == 0
    # Without --tenant, a local folder is owned as an S3 drop would be: here STAMEN_DROP_DEFAULT_TENANT.
    code, out = stamen("validate", str(local), "--json", env={**env, "STAMEN_DROP_DEFAULT_TENANT": "lab-x"})
    assert code == 0 and json.loads(out)["ok"], out
    (local / "stage_samples.tsv").unlink()
    code, out = stamen("validate", str(local), "--tenant", "acme", "--dry-run", env=env)
    assert code == 1 and "VAL-DAY-004" in out


def test_schema_and_generate_yaml(tmp_path: Path) -> None:
    code, out = stamen("schema", "--json")
    assert code == 0 and {"name", "tenant", "samples"} <= set(json.loads(out)["required"])
    code, out = stamen("schema")
    assert code == 0 and "reference_genome" in out
    spec = write_spec(
        tmp_path / "w.yaml",
        {
            "name": "w",
            "samples": [
                {
                    "id": "S1",
                    "platform": "ILMN",
                    "r1": "s3://lab-bucket/S1_R1.fastq.gz",
                    "r2": "s3://lab-bucket/S1_R2.fastq.gz",
                }
            ],
        },
    )
    code, out = stamen(
        "generate-yaml", str(spec), "--out", str(tmp_path / "out"), "--tenant", "acme", "--json"
    )
    assert code == 0, out
    assert set(json.loads(out)["files"]) == {"daylily_work.yaml", "stage_samples.tsv", "daylily_info.yaml"}
    assert yaml.safe_load((tmp_path / "out" / "daylily_info.yaml").read_text())["customer_id"] == "acme"
    code, out = stamen("generate-yaml", str(spec), "--out", str(tmp_path / "out2"))  # no tenant anywhere
    assert code == 1 and "VAL-REQ-001" in out and not (tmp_path / "out2").exists()


def test_python_api_validate_workset(s3lab: S3Lab) -> None:
    folder = s3lab.drop_folder("api1")
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url)
    validator = WorksetValidator(region="us-west-2", settings=settings)
    report = validator.validate_workset(bucket=s3lab.bucket, prefix=folder, tenant="acme")
    assert report.ok and report.estimate is not None and not report.dry_run
    dry = validator.validate_workset(
        bucket=s3lab.bucket, prefix=folder.rstrip("/"), dry_run=True, tenant="acme"
    )
    assert dry.ok and dry.dry_run and dry.estimate is None
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key="reads/api1_R2.fastq.gz")
    broken = validator.validate_workset(bucket=s3lab.bucket, prefix=folder, tenant="acme")
    assert [f.code for f in broken.findings if f.severity == "error"] == ["SNF-OBJ-001"]
    missing = validator.validate_workset(bucket="no-such-bucket-stamen", prefix="x/", tenant="acme")
    assert [f.code for f in missing.findings] == ["SNF-OBJ-004"]


def test_python_api_without_a_tenant_decides_it_as_the_drop_watcher_does(s3lab: S3Lab) -> None:
    """The module docstring's call, no tenant=: daylily_info.yaml's customer_id, else the drop default."""
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url)
    unowned = s3lab.drop_folder("api3")  # its daylily_info.yaml names no customer_id
    report = WorksetValidator(region="us-west-2", settings=settings).validate_workset(
        bucket=s3lab.bucket, prefix=unowned
    )
    assert report.ok, report.findings
    assert report.estimate is not None and report.estimate.cost_usd_median > 0
    # The fallback really is STAMEN_DROP_DEFAULT_TENANT: a malformed one is reported as the tenant.
    odd = WorksetValidator(
        region="us-west-2", settings=settings, intake=IntakeSettings(drop_default_tenant="Lab 7")
    )
    assert [
        (f.code, f.field) for f in odd.validate_workset(bucket=s3lab.bucket, prefix=unowned).findings
    ] == [("VAL-ID-002", "tenant")]
    # A folder that names its customer is validated as that customer's, not the default tenant's.
    owned = s3lab.drop_folder("api4", info={"pipeline_type": "fastq-qc", "customer_id": "lsmc"})
    assert odd.validate_workset(bucket=s3lab.bucket, prefix=owned).ok
    clash = odd.validate_workset(bucket=s3lab.bucket, prefix=owned, tenant="acme")
    assert [f.code for f in clash.findings] == ["VAL-DAY-002"]


@pytest.mark.parametrize("region", ["eu-west-1"])
async def test_python_api_async_variant_prices_in_its_region(s3lab: S3Lab, region: str) -> None:
    folder = s3lab.drop_folder("api2")
    validator = WorksetValidator(region=region, settings=Settings(AWS_ENDPOINT_URL=s3lab.url))
    report = await validator.validate_workset_async(bucket=s3lab.bucket, prefix=folder, tenant="acme")
    assert report.estimate is not None and report.estimate.region == region
    assert report.estimate.transfer_gb > 0  # the bucket is in us-west-2


def test_python_api_reports_the_folder_layout(s3lab: S3Lab) -> None:
    validator = WorksetValidator(region="us-west-2", settings=Settings(AWS_ENDPOINT_URL=s3lab.url))
    no_work = s3lab.drop_folder("api5")
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key=no_work + "daylily_work.yaml")
    report = validator.validate_workset(bucket=s3lab.bucket, prefix=no_work, tenant="acme")
    assert [(f.code, f.source) for f in report.findings] == [("VAL-DAY-004", "daylily_work.yaml")]
    two = s3lab.drop_folder("api6")
    manifest = s3lab.get(two + "stage_samples.tsv")
    for name in ("a.analysis_samples_manifest.tsv", "b.analysis_samples_manifest.tsv"):
        s3lab.put(two + name, manifest)
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key=two + "stage_samples.tsv")
    report = validator.validate_workset(bucket=s3lab.bucket, prefix=two, tenant="acme")
    [found] = report.findings
    assert (found.code, found.field) == ("VAL-DAY-005", "samples")
    assert "a.analysis_samples_manifest.tsv, b.analysis_samples_manifest.tsv" in found.message
