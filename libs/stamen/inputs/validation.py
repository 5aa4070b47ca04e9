"""Full validation of an imported workset: the pure rules, the tenant's buckets, the storage checks and the
estimate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from stamen.inputs.storage import StorageChecker, StorageReport
from stamen.tenancy.buckets import TenantBuckets, access_findings
from stamen.worksets import Finding, ImportResult, ValidationReport, WorksetSpec, estimate, validate_spec

T = TypeVar("T")

# Up to this many samples a spec is imported and checked in well under a millisecond of CPU (0.2 ms at one
# sample, about 1 ms at 16): less than handing it to a thread and back, which on a busy event loop waits for
# the GIL twice (up to its 5 ms switch interval each way). Larger specs go to a thread, so the loop keeps
# serving while a 10,000-sample spec takes its CPU second.
INLINE_MAX_SAMPLES = 16


async def run_sized(samples: int | None, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`work(*args, **kwargs)` on the loop for a spec of at most INLINE_MAX_SAMPLES samples, else in a
    thread; `samples` None (not known yet, e.g. a document not imported) counts as large."""
    if samples is not None and samples <= INLINE_MAX_SAMPLES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


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
    # The pure work grows with the workset (a CPU second at 10,000 samples): off the event loop when large.
    return await run_sized(
        len(spec.samples),
        _report,
        imported,
        spec,
        storage,
        rights,
        cluster_region=cluster_region,
        strict=strict,
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
