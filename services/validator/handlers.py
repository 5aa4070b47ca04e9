"""workset.submitted -> validating -> queued (validated, with the estimate) or rejected (with findings);
and the Daylily sentinels of S3-dropped worksets kept true as their state changes. Each handler is a
function of the message and keyword-only dependencies the wiring binds (functools.partial)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from services.validator.checks import CheckResult
from stamen.bus.consumer import Delivery, RetryLater
from stamen.diagnostics import CatalogEntry, UnknownErrorCodeError, get_entry
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.envelope import Envelope
from stamen.events.types import (
    MAX_CODES,
    WorksetCancelled,
    WorksetCompleted,
    WorksetDeadLettered,
    WorksetQueued,
    WorksetRejected,
    WorksetValidated,
)
from stamen.inputs import sentinels
from stamen.inputs.objects import ObjectStore, StorageError
from stamen.inputs.repository import IntakeRepository
from stamen.inputs.tenant import TenantFacts, workset_and_tenant
from stamen.service.idempotent import GroupCommit, Screened, idempotent, shared_read
from stamen.service.poison import known_workset, workset_id_of
from stamen.store.db import Connection
from stamen.store.diagnoses import DiagnosisRow
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
ACTOR = "validator"
SENTINEL_CONSUMER = "validator-sentinels"
STORAGE_RETRY_SECONDS = 15.0
# `validating` is committed before the checks run, so it is visible while they last; a workset found in
# it (its checks still running elsewhere, or a validator that crashed during them) is validated like a
# submitted one. No transition leads back into either state, so the decision, applied under the workset's
# row lock only to a workset still in one of them, is applied once however often workset.submitted is
# delivered: it needs no inbox claim (one INSERT per workset, and its pruning, saved).
AWAITING_VALIDATION = frozenset({WorksetState.SUBMITTED, WorksetState.VALIDATING})

# (spec, its tenant's facts as read with the workset) -> the decision
Check = Callable[[dict[str, Any], TenantFacts], Awaitable[CheckResult]]


async def validate_submitted(
    envelope: Envelope,
    delivery: Delivery,
    *,
    pool: Callable[[], asyncpg.Pool],
    check: Check,
    max_deliver: int,
    group: GroupCommit | None = None,
) -> None:
    """The checks (S3 calls, seconds) run outside the transaction, so this handler takes the delivery
    rather than a unit of work; the decision is applied inside one, only if the workset is still awaiting
    validation. With `group`, the read and the decision share transactions with the service's other calls
    (stamen.service.idempotent.GroupCommit); the checks never run inside one."""
    # The spec is read from PostgreSQL (claim check): the event carries only the workset's identity. The
    # tenant's buckets and customer row are read by the same statement (one, not three), in the transaction
    # that also commits `validating`, so a person (or the portal's timeline) sees the checks running.

    async def read(uow: UnitOfWork) -> tuple[Workset, TenantFacts | None]:
        ws, tenant = await workset_and_tenant(uow, workset_id_of(envelope))
        if ws.state not in AWAITING_VALIDATION:
            return ws, None
        if ws.state is WorksetState.SUBMITTED:
            ws.transition(WorksetState.VALIDATING, actor=ACTOR, reason="validation started", cause=envelope)
            await uow.worksets.save(ws)
            await uow.commit()
        return ws, tenant

    async with known_workset(envelope):
        ws, tenant = await shared_read(group, pool, read)
    if tenant is None:
        # Decided by an earlier delivery (or the reconciler), or cancelled meanwhile: nothing to do.
        log.info("validator.skipped", state=ws.state.value, delivery=delivery.num_delivered)
        return
    result = await check(ws.spec, tenant)
    if result.storage_unavailable and delivery.num_delivered < max_deliver:
        # On the last delivery the workset is rejected with SNF-OBJ-006 instead: nothing stays stuck.
        raise RetryLater(STORAGE_RETRY_SECONDS, "storage unavailable")

    async def decide(uow: UnitOfWork) -> None:
        await apply_decision(uow, envelope, result=result)
        await uow.commit()

    # A workset entering its queue updates the queue's admission_queues row (a trigger): shared with the
    # tenant's other worksets of that priority, so grouped decisions take those rows in one order.
    async with known_workset(envelope):
        if group is not None:
            await group.run(decide, lock_order=(ws.tenant_id, ws.priority))
        else:
            async with UnitOfWork(pool()) as uow:
                await decide(uow)


async def apply_decision(uow: UnitOfWork, event: Envelope, *, result: CheckResult) -> None:
    ws = await uow.worksets.get(workset_id_of(event), for_update=True)
    if ws.state not in AWAITING_VALIDATION:
        # Decided meanwhile by another delivery of the same event (its row lock held until it committed),
        # or cancelled: nothing to do.
        log.info("validator.skipped", state=ws.state.value)
        return
    if ws.state is WorksetState.SUBMITTED:
        ws.transition(WorksetState.VALIDATING, actor=ACTOR, reason="validation started", cause=event)
    if result.ok:
        reason = (
            f"valid ({len(result.warnings)} warnings)"
            if result.validated
            else "queued without validation (STAMEN_ENABLE_VALIDATION=false)"
        )
        median = result.estimate.get("cost_usd_median") if result.estimate else None
        ws.transition(
            WorksetState.QUEUED,
            actor=ACTOR,
            reason=reason,
            event=WorksetValidated(warning_count=len(result.warnings), cost_usd_median=median),
            cause=event,
        )
        ws.event(WorksetQueued(priority=ws.priority), cause=event)
    else:
        ws.transition(
            WorksetState.REJECTED,
            actor=ACTOR,
            reason=f"{len(result.errors)} validation errors: "
            + "; ".join(e["code"] for e in result.errors[:5]),
            # The findings themselves are saved below (workset_validations); the event names their codes.
            event=WorksetRejected(
                error_count=len(result.errors),
                warning_count=len(result.warnings),
                codes=list(dict.fromkeys(e["code"] for e in result.errors))[:MAX_CODES],
            ),
            cause=event,
        )
    # The findings and estimate (workset_validations) are written by the statement that saves the workset.
    validation = IntakeRepository.saving_validation(
        ws.id,
        ok=result.ok,
        findings=result.errors + result.warnings,
        estimate=result.estimate,
        note=result.note,
    )
    await uow.worksets.save(ws, validation)
    log.info("validator.done", outcome=ws.state.value, errors=len(result.errors))


def sentinel_for(
    event: Envelope, diagnosis: DiagnosisRow | None = None, findings: list[dict[str, Any]] | None = None
) -> tuple[str, bytes] | None:
    """Which Daylily sentinel an event makes true, and its content (`diagnosis`: a dead letter's; `findings`:
    a rejection's, read from workset_validations: the event only names their codes)."""
    payload, at = event.payload, event.occurred_at
    if isinstance(payload, WorksetRejected):
        summary = sentinels.summarise_findings(findings) if findings else ", ".join(payload.codes)
        return sentinels.ERROR, sentinels.error_body(at, "rejected: " + summary)
    if isinstance(payload, WorksetCompleted):
        return sentinels.COMPLETE, sentinels.timestamp_body(at)
    if isinstance(payload, WorksetDeadLettered):
        return sentinels.ERROR, sentinels.error_body(at, dead_letter_message(payload, diagnosis))
    if isinstance(payload, WorksetCancelled):
        return sentinels.ERROR, sentinels.error_body(
            at, f"cancelled by {payload.cancelled_by}: {payload.reason}"
        )
    return None


def dead_letter_message(payload: WorksetDeadLettered, diagnosis: DiagnosisRow | None) -> str:
    """'failed for good (not_retryable) after 1 attempt: WS-DAT-002 <name> in step qc: <evidence>; fix: ...'"""
    runs = f"{payload.attempts} attempt{'s' if payload.attempts != 1 else ''}"
    head = f"failed for good ({payload.reason}) after {runs}"
    code = diagnosis.code if diagnosis is not None else payload.code
    if code is None:  # an event written before dead letters carried their diagnosis
        return f"dead-lettered after {runs}: {payload.detail or payload.reason}"
    try:
        entry: CatalogEntry | None = get_entry(code)
    except UnknownErrorCodeError:
        entry = None
    parts = [f"{head}: {code}" + (f" {entry.name}" if entry else "")]
    if diagnosis is not None and diagnosis.step:
        parts[0] += f" in step {diagnosis.step}"
    evidence = _first_evidence(diagnosis)
    if evidence:
        parts.append(evidence)
    if payload.detail:
        parts.append(payload.detail)
    if entry is not None:
        parts.append("fix: " + entry.remediation[0])
    return "; ".join(parts)


def _first_evidence(diagnosis: DiagnosisRow | None) -> str:
    if diagnosis is None or not diagnosis.candidates:
        return ""
    top = diagnosis.candidates[0]
    lines = [str(line) for line in top.get("evidence") or []] + [str(f) for f in top.get("facts") or []]
    return f'evidence: "{lines[0]}"' if lines else ""


@dataclass(frozen=True)
class SentinelWrite:
    """A sentinel to put: where, which, what (read in a transaction, put outside it)."""

    bucket: str
    folder: str
    name: str
    body: bytes


async def dropped_worksets(conn: Connection, events: Sequence[Envelope]) -> list[bool]:
    """For each event, whether its workset came from an S3 drop folder (a Screen: one read for a group's
    events; the others have no sentinel to keep), as `sentinel_to_write` reads it of one, at the same moment."""
    dropped = await IntakeRepository(conn).dropped_worksets([workset_id_of(e) for e in events])
    return [workset_id_of(e) in dropped for e in events]


async def sentinel_to_write(uow: UnitOfWork, event: Envelope) -> SentinelWrite | None:
    """The sentinel `event` makes true, or None: not an S3-dropped workset (most: no folder to keep in
    step, so no effect and no inbox claim either), no sentinel for this event, or already written for it."""
    workset_id = workset_id_of(event)
    repository = IntakeRepository(uow.connection)
    drop = await repository.drop_for_workset(workset_id)
    if drop is None or await uow.inbox.claimed(SENTINEL_CONSUMER, event.id):
        return None
    diagnosis, findings = None, None
    if isinstance(event.payload, WorksetDeadLettered) and event.payload.attempt is not None:
        diagnosis = await uow.diagnoses.get(workset_id, event.payload.attempt)
    if isinstance(event.payload, WorksetRejected):
        validation = await repository.validation_for(workset_id)
        findings = validation["findings"] if validation else None
    written = sentinel_for(event, diagnosis, findings)
    if written is None:
        return None
    name, body = written
    return SentinelWrite(drop.bucket, drop.folder, name, body)


async def keep_sentinel(
    envelope: Envelope,
    delivery: Delivery,
    *,
    pool: Callable[[], asyncpg.Pool],
    store: Callable[[], ObjectStore],
    group: GroupCommit | None = None,
) -> None:
    """Keep an S3-dropped workset's Daylily sentinel true as its state changes. The put (S3) runs between
    two transactions, never inside one, so both can be shared (`group`): what to write is read first;
    the sentinel is recorded under the inbox claim after the put. A redelivery before that commit puts
    the same sentinel again (the same bytes); one after it finds the claim and writes nothing."""
    # Most terminal worksets were not dropped via S3: a group asks which of its events' worksets were in one
    # statement (the screen), and only those read what to write (was that read, in a savepoint, per event).
    find = functools.partial(sentinel_to_write, event=envelope)
    if group is not None:
        write = await group.run_screened(find, Screened(dropped_worksets, envelope))
    else:
        write = await shared_read(group, pool, find)
    if write is None:
        return
    try:
        await store().put(write.bucket, write.folder + write.name, write.body)
    except StorageError as exc:
        raise RetryLater(STORAGE_RETRY_SECONDS, str(exc)) from None

    async def record(uow: UnitOfWork, event: Envelope) -> None:
        await IntakeRepository(uow.connection).mark_sentinel(workset_id_of(event), write.name)
        log.info(
            "validator.sentinel_written", folder=f"s3://{write.bucket}/{write.folder}", sentinel=write.name
        )

    await idempotent(SENTINEL_CONSUMER, pool, record, group=group)(envelope, delivery)
