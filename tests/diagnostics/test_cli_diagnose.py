"""`stamen diagnose FILE|-`: ranked candidates with evidence and remediation, as text or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from stamen.cli_diagnose import register

app = typer.Typer()
register(app)
app.command("noop", hidden=True)(lambda: None)  # a second command keeps `diagnose` a named subcommand
runner = CliRunner()

NEXTFLOW_OOM = """Error executing process > 'ALIGN (s1)'

Caused by:
  Process `ALIGN (s1)` terminated with an error exit status (137)

Command exit status:
  137
"""


def test_a_file_gives_ranked_candidates_with_evidence_and_remediation(tmp_path: Path) -> None:
    log = tmp_path / "job.err"
    log.write_text(
        "Building DAG of jobs...\nError in rule x:\n[E::bwa_idx_load_from_disk] fail to locate the index files\n"
    )
    result = runner.invoke(app, ["diagnose", str(log), "--top", "2"])
    assert result.exit_code == 0, result.output
    first, second = result.output.split("\n\n")[:2]
    assert first.startswith("#1 WS-DAT-006 ") and "3: [E::bwa_idx_load_from_disk]" in first
    assert "remediation:" in first and "docs: docs/errors.md#ws-dat-006" in first
    assert second.startswith("#2 ")


def test_stdin_and_json_and_the_exit_status_a_wrapper_reports() -> None:
    result = runner.invoke(app, ["diagnose", "-", "--json"], input=NEXTFLOW_OOM)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    top = doc["candidates"][0]
    assert (doc["unknown"], top["code"], top["retryable"]) == (False, "WS-RES-001", True)
    assert top["facts"] == ["exit code 137 (reported in the log)"]


def test_the_callers_exit_code_and_job_state_count_as_evidence() -> None:
    result = runner.invoke(app, ["diagnose", "-", "--state", "OUT_OF_MEMORY", "--json"], input="")
    assert json.loads(result.output)["candidates"][0]["code"] == "WS-RES-001"
    result = runner.invoke(app, ["diagnose", "-", "--exit-code", "-9", "--json"], input="")
    assert json.loads(result.output)["candidates"][0]["facts"] == ["signal 9"]


def test_an_unknown_failure_exits_1_and_shows_the_log_tail() -> None:
    result = runner.invoke(app, ["diagnose", "-"], input="something odd happened\n")
    assert result.exit_code == 1
    assert result.output.startswith("#1 WS-UNK-000 ") and "1: something odd happened" in result.output


def test_a_missing_file_is_a_named_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["diagnose", str(tmp_path / "nope.log"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["code"] == "FILE_NOT_FOUND"
