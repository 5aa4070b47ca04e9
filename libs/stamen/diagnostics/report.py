"""Render a Diagnosis: plain text for the CLI and notifications, HTML for the portal, and a JSON-able
document of the ranked candidates (``stamen diagnose --json``, ``POST /api/v1/diagnose``)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import jinja2

from stamen.diagnostics.catalog import get_entry
from stamen.diagnostics.classifier import Candidate, Diagnosis

REPORT_TEMPLATE = "report.html.j2"
DEFAULT_DOCS_URL = "docs/errors.md"
MAX_OTHER_CANDIDATES = 4
DEFAULT_RANKED = 5

ReportFormat = Literal["text", "html"]


def format_diagnostic_report(
    diagnosis: Diagnosis,
    fmt: ReportFormat = "text",
    *,
    docs_url: str = DEFAULT_DOCS_URL,
) -> str:
    """Render ``diagnosis``; ``docs_url`` is the errors page that catalog anchors point into."""
    if fmt == "text":
        return _format_text(diagnosis, docs_url)
    if fmt == "html":
        return _html_template().render(
            top=diagnosis.top,
            entry=get_entry(diagnosis.top.code),
            unknown=diagnosis.is_unknown,
            others=diagnosis.candidates[1 : 1 + MAX_OTHER_CANDIDATES],
            docs_url=docs_url,
        )
    raise ValueError(f"unknown report format {fmt!r}; expected 'text' or 'html'")


def _format_text(diagnosis: Diagnosis, docs_url: str) -> str:
    top = diagnosis.top
    entry = get_entry(top.code)
    lines = [
        f"{top.code} {top.name}",
        f"  category: {top.category.value}  severity: {top.severity.value}  "
        f"retry class: {top.retry_class.value}  score: {top.score:g}",
        f"  {entry.summary}",
    ]
    if top.matched_facts:
        lines.append("Matched: " + ", ".join(top.matched_facts))
    if top.evidence_lines:
        lines.append("Log tail:" if diagnosis.is_unknown else "Evidence:")
        lines.extend(f"  {line.line_number:>6}: {line.text}" for line in top.evidence_lines)
    lines.append("Remediation:")
    lines.extend(f"  {number}. {step}" for number, step in enumerate(entry.remediation, start=1))
    lines.append(f"Docs: {docs_url}#{entry.docs_anchor}")
    others = diagnosis.candidates[1 : 1 + MAX_OTHER_CANDIDATES]
    if others:
        lines.append("Other candidates:")
        lines.extend(_other_candidate_line(candidate) for candidate in others)
    return "\n".join(lines) + "\n"


def _other_candidate_line(candidate: Candidate) -> str:
    return f"  {candidate.code} {candidate.name} (score {candidate.score:g})"


@cache
def _html_template() -> jinja2.Template:
    source = resources.files("stamen.diagnostics").joinpath(REPORT_TEMPLATE).read_text(encoding="utf-8")
    # Log lines are untrusted input; autoescape keeps them from injecting markup into the portal.
    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(source)


def candidate_document(candidate: Candidate, *, docs_url: str = DEFAULT_DOCS_URL) -> dict[str, Any]:
    """One ranked candidate with its evidence and the catalog's remediation, as plain JSON types."""
    entry = get_entry(candidate.code)
    return {
        "code": candidate.code,
        "name": candidate.name,
        "category": candidate.category.value,
        "severity": candidate.severity.value,
        "retry_class": candidate.retry_class.value,
        "retryable": candidate.retry_class.is_retryable,
        "score": candidate.score,
        "facts": list(candidate.matched_facts),
        "evidence": [
            {"line": line.line_number, "text": line.text, "pattern": line.pattern or None}
            for line in candidate.evidence_lines
        ],
        "summary": entry.summary,
        "remediation": list(entry.remediation),
        "docs": f"{docs_url}#{entry.docs_anchor}",
    }


def diagnosis_document(
    diagnosis: Diagnosis, *, top: int = DEFAULT_RANKED, docs_url: str = DEFAULT_DOCS_URL
) -> dict[str, Any]:
    """The best ``top`` candidates, best first; ``unknown`` when nothing in the catalog matched."""
    return {
        "unknown": diagnosis.is_unknown,
        "candidates": [candidate_document(c, docs_url=docs_url) for c in diagnosis.candidates[: max(top, 1)]],
    }


def format_ranked_text(
    diagnosis: Diagnosis, *, top: int = DEFAULT_RANKED, docs_url: str = DEFAULT_DOCS_URL
) -> str:
    """Every one of the best ``top`` candidates with its evidence and remediation, best first."""
    shown = diagnosis.candidates[: max(top, 1)]
    blocks: list[str] = []
    for rank, candidate in enumerate(shown, start=1):
        entry = get_entry(candidate.code)
        lines = [
            f"#{rank} {candidate.code} {candidate.name}  (score {candidate.score:g})",
            f"   category: {candidate.category.value}  severity: {candidate.severity.value}  "
            f"retry class: {candidate.retry_class.value}"
            + (" (retried automatically)" if candidate.retry_class.is_retryable else " (not retried)"),
            f"   {entry.summary}",
        ]
        if candidate.matched_facts:
            lines.append("   matched: " + ", ".join(candidate.matched_facts))
        if candidate.evidence_lines:
            lines.append("   log tail:" if diagnosis.is_unknown else "   evidence:")
            lines.extend(f"     {line.line_number:>6}: {line.text}" for line in candidate.evidence_lines)
        lines.append("   remediation:")
        lines.extend(f"     {number}. {step}" for number, step in enumerate(entry.remediation, start=1))
        lines.append(f"   docs: {docs_url}#{entry.docs_anchor}")
        blocks.append("\n".join(lines))
    hidden = len(diagnosis.candidates) - len(shown)
    if hidden > 0:
        blocks.append(f"({hidden} weaker candidate{'s' if hidden != 1 else ''} not shown; raise --top)")
    return "\n\n".join(blocks) + "\n"
