"""Commands on worksets and clusters: do this, or fail loudly with a stable code. Each is one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from stamen.bus.subjects import PLATFORM_TENANT
from stamen.domain.clusters import ClusterStatus
from stamen.domain.lifecycle import WorksetState, can_transition
from stamen.errors import CodedError
from stamen.events.envelope import new_envelope
from stamen.events.types import ClusterDrained, WorksetArchived, WorksetCancelled
from stamen.retry import RequeueChanges
from stamen.retry import RequeueChangesInvalid as RequeueChangesInvalid  # the API and CLI catch it here
from stamen.retry_commands import WorksetNotRequeueable as WorksetNotRequeueable
from stamen.retry_commands import requeue_with_fresh_budget
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository, access_findings
from stamen.worksets.findings import Finding

S = WorksetState
# Before admission a cancel is immediate; after it, the scheduler stops the job and frees the slot.
CANCEL_NOW = frozenset({S.SUBMITTED, S.VALIDATING, S.QUEUED, S.RETRY_WAIT})
CANCEL_VIA_SCHEDULER = frozenset({S.SCHEDULED, S.RUNNING})


class WorksetNotCancellable(CodedError, RuntimeError):
    code = "WORKSET_NOT_CANCELLABLE"
    http_status = 409


@dataclass(frozen=True)
class CancelResult:
    workset_id: str
    state: str
    pending: bool  # True when the scheduler still has to stop a running job


async def request_cancel(
    pool: asyncpg.Pool, workset_id: str, *, actor: str, reason: str = ""
) -> CancelResult:
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(workset_id, for_update=True)
        if ws.state in CANCEL_NOW:
            ws.transition(
                S.CANCELLED,
                actor=actor,
                reason=reason or "cancelled before it started",
                event=WorksetCancelled(cancelled_by=actor, reason=reason),
            )
            pending = False
        elif ws.state in CANCEL_VIA_SCHEDULER:
            if ws.cancel_requested_by is None:
                ws.cancel_requested_by = actor
            pending = True
        else:
            raise WorksetNotCancellable(
                f"workset {workset_id} is {ws.state}; only worksets that have not finished can be cancelled"
            )
        await uow.worksets.save(ws)
        await uow.commit()
    return CancelResult(workset_id, ws.state.value, pending)


class WorksetNotArchivable(CodedError, RuntimeError):
    code = "WORKSET_NOT_ARCHIVABLE"
    http_status = 409


async def archive(pool: asyncpg.Pool, workset_id: str, *, actor: str) -> str:
    """Move a finished workset to archived; a dead letter leaves the queue with it. History stays."""
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(workset_id, for_update=True)
        if not can_transition(ws.state, S.ARCHIVED):
            raise WorksetNotArchivable(
                f"workset {workset_id} is {ws.state}; only finished worksets can be archived",
                state=ws.state.value,
            )
        ws.transition(S.ARCHIVED, actor=actor, reason="archived", event=WorksetArchived(archived_by=actor))
        await uow.worksets.save(ws)
        await uow.dead_letters.purge(workset_id)
        await uow.commit()
    return ws.state.value


class BucketAccessDenied(CodedError):
    """The workset names S3 locations its tenant may no longer use (a grant was revoked since it was
    validated): it is not sent back to the queue. `findings` are the S3-ACCESS findings."""

    code = "S3_ACCESS_DENIED"
    http_status = 422

    def __init__(self, message: str, findings: list[Finding]) -> None:
        super().__init__(message, findings=[f.model_dump(mode="json") for f in findings])
        self.findings = findings


async def refuse_foreign_buckets(uow: UnitOfWork, workset_id: str) -> None:
    """Raise BucketAccessDenied when the workset's spec names a bucket its tenant may not use now."""
    ws = await uow.worksets.get(workset_id)
    refused = access_findings(
        ws.spec, await BucketGrantRepository(uow.connection).tenant_buckets(ws.tenant_id)
    )
    if refused:
        raise BucketAccessDenied(
            f"workset {workset_id} uses S3 locations tenant {ws.tenant_id} may not use (any more): "
            + "; ".join(f.message for f in refused[:3]),
            refused,
        )


async def requeue(
    pool: asyncpg.Pool, workset_id: str, *, actor: str, changes: dict[str, Any] | None = None
) -> str:
    """Send a dead-lettered (or failed) workset back to the queue with a fresh retry budget.

    `changes` (optional) may set max_retries, max_duration_seconds, priority, preferred_cluster and
    memory_multiplier (RequeueChanges); they are written to the workset and its spec before it is
    queued. Completed steps stay completed, so it resumes where it stopped. Returns the new state
    ("queued"). Raises RequeueChangesInvalid (REQUEUE_CHANGE_INVALID) for a bad change, before
    anything is written, WorksetNotRequeueable (WORKSET_NOT_REQUEUEABLE) for any other state, and
    BucketAccessDenied (S3_ACCESS_DENIED) when its spec names a bucket its tenant may not use."""
    parsed = RequeueChanges.parse(changes) if changes else None
    async with UnitOfWork(pool) as uow:
        await refuse_foreign_buckets(uow, workset_id)
        reason = "requeued by an operator" + (f" with {parsed.describe()}" if parsed else "")
        ws = await requeue_with_fresh_budget(uow, workset_id, actor=actor, reason=reason, changes=parsed)
        await uow.commit()
    return ws.state.value


async def purge_dead_letter(pool: asyncpg.Pool, workset_id: str, *, actor: str) -> None:
    """Drop a dead letter for good: the workset is archived, its history kept."""
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(workset_id)
    if ws.state is not S.DEAD_LETTERED:
        raise WorksetNotRequeueable(f"workset {workset_id} is {ws.state}, not in the dead-letter queue")
    await archive(pool, workset_id, actor=actor)


async def set_cluster_status(pool: asyncpg.Pool, name: str, status: ClusterStatus, *, actor: str) -> None:
    """Drain or activate a cluster (ClusterNotFound, CLUSTER_NOT_FOUND, when there is none). Draining
    one that was not draining publishes `cluster.drained` with the change, for the operators' alerts."""
    async with UnitOfWork(pool) as uow:
        before = await uow.clusters.cluster(name)
        await uow.clusters.set_cluster_status(name, status)
        if status == "draining" and before.status != "draining":
            uow.publish(
                new_envelope(
                    ClusterDrained(cluster=name, drained_by=actor),
                    tenant_id=PLATFORM_TENANT,
                    region=before.region,
                )
            )
        await uow.commit()
