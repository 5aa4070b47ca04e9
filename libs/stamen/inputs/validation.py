"""Full validation of an imported workset: the pure rules, the tenant's buckets, the storage checks and the
estimate."""

from __future__ import annotations

import asyncio

from stamen.inputs.storage import StorageChecker, StorageReport
from stamen.tenancy.buckets import TenantBuckets, access_findings
from stamen.worksets import Finding, ImportResult, ValidationReport, WorksetSpec, estimate, validate_spec

DRY_RUN_NOTE = (
    "Dry run: no storage was accessed (object existence, sizes, content sniffing, reference "
    "files and bucket regions were not checked) and no estimate was made."
)


async def validate_imported(
    imported: ImportResult,
    *,
    checker: StorageChecker | None,
    cluster_region: str,
    rights: TenantBuckets | None,
    strict: bool = False,
    dry_run: bool = False,
) -> ValidationReport:
    """Validate what an importer produced; `checker=None` or `dry_run` leaves storage alone and says so.

    `rights` are the submitting tenant's buckets: every S3 location outside them is an S3-ACCESS finding and
    is never fetched. None only for an operator's own tools (`stamen validate`, the Python API)."""
    spec = imported.spec
    if spec is None or checker is None or dry_run:
        prior = _prior(imported, rights)
        report = validate_spec(spec, strict=strict, dry_run=dry_run, prior_findings=prior)
        return report.model_copy(update={"note": DRY_RUN_NOTE}) if dry_run else report
    storage = await checker.check(spec, rights)
    # The pure work grows with the workset (a CPU second at 10,000 samples): in a thread, off the event loop.
    return await asyncio.to_thread(
        _report, imported, spec, storage, rights, cluster_region=cluster_region, strict=strict
    )


def _prior(imported: ImportResult, rights: TenantBuckets | None) -> list[Finding]:
    """The importer's findings, and one per S3 location outside the tenant's buckets."""
    if imported.spec is None or rights is None:
        return list(imported.findings)
    return [*imported.findings, *access_findings(imported.spec, rights)]


def _report(
    imported: ImportResult,
    spec: WorksetSpec,
    storage: StorageReport,
    rights: TenantBuckets | None,
    *,
    cluster_region: str,
    strict: bool,
) -> ValidationReport:
    cost = estimate(
        spec,
        object_sizes=storage.sizes,
        sniffs=storage.sniffs,
        cluster_region=cluster_region,
        bucket_regions=storage.bucket_regions,
    )
    report = validate_spec(
        spec,
        strict=strict,
        dry_run=False,
        prior_findings=_prior(imported, rights),
        storage_findings=storage.findings,
        estimate=cost,
    )
    return report.model_copy(update={"note": " ".join(storage.notes)}) if storage.notes else report
