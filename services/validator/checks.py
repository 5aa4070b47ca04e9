"""The validator's decision about one submitted spec: rules, storage checks, the estimate and the
tenant's storage quota.

The work is in `stamen.worksets` (pure) and `stamen.inputs` (storage); this module only shapes the
outcome for the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from stamen.inputs.storage import StorageChecker
from stamen.inputs.validation import run_sized, validate_imported
from stamen.tenancy import TenantBuckets, access_findings
from stamen.worksets import Finding, import_form

VALIDATION_DISABLED_NOTE = (
    "STAMEN_ENABLE_VALIDATION is false: only the spec's structure and the tenant's "
    "storage quota were checked; no rules, storage checks of the inputs or estimate."
)

# tenant -> findings about the tenant itself (its storage quota); see stamen.inputs.quota.
QuotaCheck = Callable[[str], Awaitable[list[Finding]]]


@dataclass(frozen=True)
class CheckResult:
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    note: str | None = None
    estimate: dict[str, Any] | None = None
    # Storage did not answer: not the workset's fault, so it is checked again later instead of rejected.
    storage_unavailable: bool = False
    validated: bool = True

    @property
    def ok(self) -> bool:
        return not self.errors


async def check_submission(
    spec: dict[str, Any],
    *,
    tenant_id: str,
    checker: StorageChecker | None,
    cluster_region: str,
    rights: TenantBuckets,
    enable_validation: bool = True,
    strict: bool = False,
    quota: QuotaCheck | None = None,
) -> CheckResult:
    """`rights`: the buckets the tenant may use; every S3 location outside them is an S3-ACCESS error,
    whatever path the workset came by and even unvalidated (it is the tenant boundary, not a check)."""
    # The tenant is who submitted it (authenticated), never what the document claims.
    # A 10,000-sample spec takes a CPU second to import and check: in a thread when large, so the loop keeps
    # serving; a small one on the loop (stamen.inputs.validation.run_sized).
    samples = spec.get("samples")
    imported = await run_sized(
        len(samples) if isinstance(samples, list) else None,
        import_form,
        {**spec, "tenant": tenant_id},
        source="submission",
    )
    # The quota is a limit of the customer, not a check of the workset: it applies even unvalidated.
    tenant_findings = await quota(tenant_id) if quota is not None else []
    if imported.spec is not None and not enable_validation:
        tenant_findings += access_findings(imported.spec, rights)
    if not enable_validation:
        # Even unvalidated, a workset must be a WorksetSpec: nothing downstream can run anything else.
        found = [f.model_dump() for f in [*imported.findings, *tenant_findings]]
        return CheckResult(
            errors=[f for f in found if f["severity"] == "error"],
            warnings=[],
            note=VALIDATION_DISABLED_NOTE,
            validated=False,
            storage_unavailable=any(f["code"] == "SNF-OBJ-006" for f in found),
        )
    report = await validate_imported(
        imported, checker=checker, cluster_region=cluster_region, rights=rights, strict=strict
    )
    findings = [f.model_dump() for f in [*report.findings, *tenant_findings]]
    return CheckResult(
        errors=[f for f in findings if f["severity"] == "error"],
        warnings=[f for f in findings if f["severity"] != "error"],
        note=report.note,
        estimate=report.estimate.model_dump(mode="json") if report.estimate is not None else None,
        storage_unavailable=any(f["code"] == "SNF-OBJ-006" for f in findings),
    )
