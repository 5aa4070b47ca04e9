"""`stamen validate` on real Daylily files (tests/worksets/fixtures/daylily, copied from Daylily's public
repository): a manifest or a daylily_work.yaml given on its own is read as what it is, and the report says how
it was read and what to run for the whole workset. And `stamen submit` / `stamen validate` refuse values that
would be misread, as the API does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.intake.s3kit import grant
from tests.intake.test_cli_and_api import stamen

FIXTURES = Path(__file__).resolve().parents[1] / "worksets" / "fixtures" / "daylily"
MANIFESTS = sorted((FIXTURES / "manifests").glob("*.analysis_samples_manifest.tsv"))


def test_the_fixtures_are_the_real_daylily_files() -> None:
    assert len(MANIFESTS) == 5 and (FIXTURES / "daylily_work.yaml").is_file()


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name.split(".")[0])
def test_a_real_manifest_alone_is_validated_as_a_manifest(manifest: Path) -> None:
    code, out = stamen("validate", str(manifest), "--dry-run", "--tenant", "acme", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"], out
    assert [f["code"] for f in report["findings"]] == ["VAL-REQ-003"]  # no export_uri without the work file
    assert report["note"].startswith(f"Validated {manifest.name} alone, with default workset settings")
    assert f"run `stamen validate {manifest.parent}/`" in report["note"]


def test_a_manifest_or_work_file_beside_the_rest_validates_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "runme14"
    folder.mkdir()
    shutil.copy(FIXTURES / "daylily_work.yaml", folder)
    work = folder / "daylily_work.yaml"
    # Alone: its own findings (none: every key is one Daylily reads), and the missing manifest named.
    code, out = stamen("validate", str(work), "--dry-run", "--json")
    report = json.loads(out)
    assert code == 1 and [(f["code"], f["source"]) for f in report["findings"]] == [
        ("VAL-DAY-004", "daylily_work.yaml")
    ]
    assert (
        "stage_samples.tsv (or *analysis_samples_manifest.tsv) is not beside it"
        in report["findings"][0]["message"]
    )
    assert f"run `stamen validate {folder}/`" in report["note"]
    # With a real manifest beside it: the folder, whichever of the two files is named.
    shutil.copy(FIXTURES / "manifests" / "ilmn_solo.analysis_samples_manifest.tsv", folder)
    for named in (work, folder / "ilmn_solo.analysis_samples_manifest.tsv"):
        code, out = stamen("validate", str(named), "--dry-run", "--tenant", "acme", "--json")
        report = json.loads(out)
        assert code == 0 and report["ok"] and report["findings"] == [], out
        assert f"{folder}/" in report["note"]
    # A work file under another name is recognised by its keys (Daylily's, none of a workset spec's).
    (folder / "work.yaml").write_text("dy-r: -p help\nexport: s3://lab-bucket/out/\n")
    code, out = stamen("validate", str(folder / "work.yaml"), "--dry-run", "--json")
    assert code == 1 and [f["code"] for f in json.loads(out)["findings"]] == ["VAL-DAY-004"], out


def submit(database_url: str, *args: str, ok: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "stamen", "submit", *args, "--tenant", "acme", "--json"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode == 0) is ok, out.stdout + out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


async def test_cli_submit_and_validate_refuse_values_that_would_be_misread(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool
) -> None:
    await grant(pool, "acme", "lab-bucket", "read-only")  # where its reads are
    spec = {
        "name": "w1",
        "samples": [
            {
                "id": "S1",
                "platform": "ILMN",
                "r1": "s3://lab-bucket/S1_R1.fastq.gz",
                "r2": "s3://lab-bucket/S1_R2.fastq.gz",
            }
        ],
    }
    path = tmp_path / "w1.yaml"
    path.write_text(yaml.safe_dump(spec) + "max_retries: 1\nmax_retries: 3\n")
    validated = subprocess.run(
        [sys.executable, "-m", "stamen", "validate", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validated.returncode == 1 and "VAL-INPUT-009" in validated.stdout
    assert "key 'max_retries' appears twice" in validated.stdout
    refused = submit(database_url, str(path), ok=False)["error"]
    assert isinstance(refused, dict) and refused["code"] == "VALIDATION_FAILED"
    assert [f["code"] for f in refused["details"]["findings"]] == ["VAL-INPUT-009"]
    path.write_text(yaml.safe_dump({**spec, "max_cost_usd": float("inf")}))
    assert "VAL-TYPE-002" in json.dumps(submit(database_url, str(path), ok=False))
    # Idempotency: the same document again is the same workset; another document under the key is refused.
    path.write_text(yaml.safe_dump(spec))
    first = submit(database_url, str(path), "--idempotency-key", "k1", ok=True)
    assert (
        submit(database_url, str(path), "--idempotency-key", "k1", ok=True)["workset_id"]
        == first["workset_id"]
    )
    path.write_text(yaml.safe_dump({**spec, "priority": "urgent"}))
    reused = submit(database_url, str(path), "--idempotency-key", "k1", ok=False)["error"]
    assert isinstance(reused, dict) and reused["code"] == "IDEMPOTENCY_KEY_REUSED"
