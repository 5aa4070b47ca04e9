"""The retry commands: what follows a diagnosed failure, a due retry timer and an operator's requeue.

Each runs inside the caller's unit of work (the workset's change, its history, its events, the timer
and the dead letter commit together). The decision is stamen.retry's (pure); the store only runs the
SQL these commands ask for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from stamen.diagnostics.codes import RetryClass
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.errors import CodedError
from stamen.events.envelope import Envelope
from stamen.events.types import RetryScheduled, WorksetDeadLettered, WorksetQueued
from stamen.retry import GiveUp, GiveUpReason, RequeueChanges, RetryPolicy, decide_after_failure
from stamen.store.unit_of_work import UnitOfWork


class WorksetNotRequeueable(CodedError, RuntimeError):
    code = "WORKSET_NOT_REQUEUEABLE"
    http_status = 409


@dataclass(frozen=True)
class FailureOutcome:
    """What record_failure did: `retry` (retry_wait, timer due at `due_at`), `dead_lettered` (stamen
    will not retry it: `reason` says why) or `stale` (not this attempt's failure)."""

    workset_id: str
    action: Literal["retry", "dead_lettered", "stale"]
    detail: str
    due_at: datetime | None = None
    reason: GiveUpReason | None = None


async def record_failure(
    uow: UnitOfWork,
    workset_id: str,
    *,
    attempt: int,
    code: str,
    retry_class: RetryClass,
    policy: RetryPolicy | None,
    actor: str,
    cause: Envelope | None = None,
) -> FailureOutcome:
    """Record the diagnosis of failed `attempt` and act on what stamen.retry decides.

    retryable and budget left -> retry_wait, retry_count + 1, memory escalated for resource
    failures, a durable `retry` timer; otherwise (budget used up, not retryable, or `policy` None:
    retries switched off) -> dead_lettered, a dead_letters row and exactly one
    workset.dead_lettered, whose reason says which. A diagnosis of another attempt, or of a
    workset that is no longer failed (cancelled, requeued), changes nothing."""
    ws = await uow.worksets.get(workset_id, for_update=True)
    if ws.state is not WorksetState.FAILED or attempt != ws.attempt:
        return FailureOutcome(ws.id, "stale", f"workset is {ws.state.value} at attempt {ws.attempt}")
    decision = decide_after_failure(policy, retry_class, ws.retry_count + 1, ws.max_retries)
    if isinstance(decision, GiveUp):
        await _dead_letter(uow, ws, decision, code=code, retry_class=retry_class, actor=actor, cause=cause)
        return FailureOutcome(ws.id, "dead_lettered", decision.detail, reason=decision.reason)
    due_at = await uow.timers.due_in(decision.delay_seconds)
    ws.retry_count += 1
    ws.memory_multiplier = max(ws.memory_multiplier, decision.memory_multiplier)
    detail = (
        f"{code} is {retry_class.value}: retry {ws.retry_count}/{ws.max_retries} "
        f"in {decision.delay_seconds:.1f}s"
    )
    ws.transition(
        WorksetState.RETRY_WAIT,
        actor=actor,
        reason=detail,
        event=RetryScheduled(attempt=ws.attempt + 1, due_at=due_at, delay_seconds=decision.delay_seconds),
        cause=cause,
    )
    await uow.worksets.save(ws)
    await uow.timers.add_timer(ws.id, "retry", due_at, {"attempt": ws.attempt + 1})
    return FailureOutcome(ws.id, "retry", detail, due_at)


async def _dead_letter(
    uow: UnitOfWork,
    ws: Workset,
    decision: GiveUp,
    *,
    code: str,
    retry_class: RetryClass,
    actor: str,
    cause: Envelope | None,
) -> None:
    ws.transition(
        WorksetState.DEAD_LETTERED,
        actor=actor,
        reason=f"{decision.reason.value}: {code}: {decision.detail}",
        event=WorksetDeadLettered(
            reason=decision.reason.value,
            attempts=ws.attempt,
            attempt=ws.attempt,
            code=code,
            retry_class=retry_class.value,
            retryable=retry_class.is_retryable,
            detail=decision.detail,
        ),
        cause=cause,
    )
    await uow.worksets.save(ws)
    await uow.dead_letters.park(ws.id, ws.tenant_id, decision.reason, ws.attempt, code, decision.detail)


async def reset_for_retry(uow: UnitOfWork, workset_id: str, *, actor: str, reason: str) -> Workset | None:
    """Its retry timer is due: retry_wait -> queued for the next attempt (admission places it again),
    with the retry budget it has. None, and nothing changed, when the workset left retry_wait
    meanwhile (cancelled). Steps that succeeded stay done."""
    ws = await uow.worksets.get(workset_id, for_update=True)
    if ws.state is not WorksetState.RETRY_WAIT:
        return None
    await _queue_next_attempt(uow, ws, actor=actor, reason=reason)
    return ws


async def requeue_with_fresh_budget(
    uow: UnitOfWork, workset_id: str, *, actor: str, reason: str, changes: RequeueChanges | None = None
) -> Workset:
    """An operator's requeue: failed or dead_lettered -> queued for the next attempt, `changes`
    applied first, retry_count back to 0, and its dead letter (if any) marked requeued. Any other
    state raises WorksetNotRequeueable (WORKSET_NOT_REQUEUEABLE). Steps that succeeded stay done."""
    ws = await uow.worksets.get(workset_id, for_update=True)
    if ws.state not in (WorksetState.FAILED, WorksetState.DEAD_LETTERED):
        raise WorksetNotRequeueable(
            f"workset {workset_id} is {ws.state}; only dead-lettered or failed worksets can be requeued"
        )
    if changes is not None:
        changes.apply(ws)
    ws.retry_count = 0
    await _queue_next_attempt(uow, ws, actor=actor, reason=reason)
    await uow.dead_letters.mark_requeued(workset_id, actor)
    return ws


async def _queue_next_attempt(uow: UnitOfWork, ws: Workset, *, actor: str, reason: str) -> None:
    ws.transition(
        WorksetState.QUEUED,
        actor=actor,
        reason=reason,
        event=WorksetQueued(priority=ws.priority, attempt=ws.attempt + 1),
    )
    await uow.worksets.save(ws)
