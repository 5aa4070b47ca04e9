"""The validator's decision, as a pure function of the stored spec.

Storage checks (objects exist, FASTQ sniffing, reference files) and the cost estimate need S3
access and are not wired in yet (issue 3); the report says they were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stamen.worksets import import_form, validate_spec


@dataclass(frozen=True)
class CheckResult:
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    note: str | None = None
    estimate: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


def check_spec(spec: dict[str, Any], *, tenant_id: str, strict: bool = False) -> CheckResult:
    # The tenant is who submitted it (authenticated), never what the document claims.
    imported = import_form({**spec, "tenant": tenant_id}, source="submission")
    report = validate_spec(imported.spec, strict=strict, dry_run=True, prior_findings=imported.findings)
    findings = [f.model_dump() for f in report.findings]
    return CheckResult(
        errors=[f for f in findings if f["severity"] == "error"],
        warnings=[f for f in findings if f["severity"] != "error"],
        note=report.note,
    )
