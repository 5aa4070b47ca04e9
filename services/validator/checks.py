"""The validator's decision, as a pure function of the stored spec (no storage access yet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stamen.worksets.form_import import import_form


@dataclass(frozen=True)
class CheckResult:
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    estimate: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_spec(spec: dict[str, Any], *, tenant_id: str) -> CheckResult:
    # The tenant is who submitted it (authenticated), never what the document claims.
    imported = import_form({**spec, "tenant": tenant_id}, source="submission")
    findings = [f.model_dump() for f in imported.findings]
    return CheckResult(
        errors=[f for f in findings if f["severity"] == "error"],
        warnings=[f for f in findings if f["severity"] != "error"],
    )
