from __future__ import annotations

import pytest

from stamen.diagnostics import classify_error, format_diagnostic_report, get_remediation_for_error

OOM_LOG = (
    "<script>alert('x')</script> starting\n"
    "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7.batch <b>bold</b> & more\n"
    "Error in rule sort:\n"
)


def test_text_report_names_code_evidence_remediation_and_docs() -> None:
    report = format_diagnostic_report(classify_error(OOM_LOG, exit_code=137))
    assert report.startswith("WS-RES-001 Out-of-memory kill\n")
    assert "Matched: exit code 137" in report
    assert "2: slurmstepd: error: Detected 1 oom-kill event(s)" in report
    for step in get_remediation_for_error("WS-RES-001"):
        assert step in report
    assert "Docs: docs/errors.md#ws-res-001" in report
    others = report.split("Other candidates:\n", 1)[1]
    assert "  WS-PIP-002 Snakemake rule failed" in others  # the wrapper ranks below the cause


def test_text_report_for_unknown_shows_log_tail() -> None:
    report = format_diagnostic_report(classify_error("alpha\nbeta\n"))
    assert report.startswith("WS-UNK-000")
    assert "Log tail:\n       1: alpha\n       2: beta\n" in report


def test_html_report_escapes_log_content() -> None:
    html = format_diagnostic_report(classify_error(OOM_LOG, exit_code=137), fmt="html")
    assert html.lstrip().startswith('<section class="stamen-diagnosis')
    assert "<b>" not in html and "<script>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in html
    assert 'href="docs/errors.md#ws-res-001"' in html
    assert "<li>" in html  # remediation rendered as a list


def test_html_report_for_unknown_escapes_the_tail() -> None:
    html = format_diagnostic_report(classify_error("<img src=x onerror=alert(1)>\n"), fmt="html")
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Log tail" in html


def test_docs_url_is_configurable() -> None:
    html = format_diagnostic_report(
        classify_error("", exit_code=137), fmt="html", docs_url="https://stamen.example/errors"
    )
    assert 'href="https://stamen.example/errors#ws-res-001"' in html


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="markdown"):
        format_diagnostic_report(classify_error(""), fmt="markdown")  # type: ignore[arg-type]
