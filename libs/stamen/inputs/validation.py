"""Full validation of an imported workset: the pure rules, the storage checks and the estimate."""

from __future__ import annotations

import asyncio

from stamen.inputs.storage import StorageChecker, StorageReport
from stamen.worksets import ImportResult, ValidationReport, WorksetSpec, estimate, validate_spec

DRY_RUN_NOTE = ("Dry run: no storage was accessed (object existence, sizes, content sniffing, reference "
                "files and bucket regions were not checked) and no estimate was made.")


async def validate_imported(imported: ImportResult, *, checker: StorageChecker | None, cluster_region: str,
                            strict: bool = False, dry_run: bool = False) -> ValidationReport:
    """Validate what an importer produced; `checker=None` or `dry_run` leaves storage alone and says so."""
    spec = imported.spec
    if spec is None or checker is None or dry_run:
        report = validate_spec(spec, strict=strict, dry_run=dry_run, prior_findings=imported.findings)
        return report.model_copy(update={"note": DRY_RUN_NOTE}) if dry_run else report
    storage = await checker.check(spec)
    # The pure work grows with the workset (a CPU second at 10,000 samples): in a thread, off the event loop.
    return await asyncio.to_thread(_report, imported, spec, storage, cluster_region=cluster_region, strict=strict)


def _report(imported: ImportResult, spec: WorksetSpec, storage: StorageReport, *, cluster_region: str,
            strict: bool) -> ValidationReport:
    cost = estimate(spec, object_sizes=storage.sizes, sniffs=storage.sniffs, cluster_region=cluster_region,
                    bucket_regions=storage.bucket_regions)
    report = validate_spec(spec, strict=strict, dry_run=False, prior_findings=imported.findings,
                           storage_findings=storage.findings, estimate=cost)
    return report.model_copy(update={"note": " ".join(storage.notes)}) if storage.notes else report
