"""The scheduler's reconcile passes. Admission, dispatch and job polling already work from PostgreSQL
alone (queued, scheduled and running worksets need no event); what waits for an event is:

- a workset `failed` and diagnosed, whose workset.diagnosed the scheduler has not acted on after
  STAMEN_RECONCILE_AFTER_SECONDS: the retry decision is made from the diagnosis row, by the consumer's
  own handler under its inbox claim;
- a workset in `retry_wait` without a retry timer still to fire: a timer due now is added.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from stamen.domain.lifecycle import WorksetState
from stamen.events.envelope import Envelope
from stamen.recovery import diagnosed_event
from stamen.service.idempotent import idempotent
from stamen.service.reconciler import ReconcilePass, hand_over
from stamen.settings import Settings
from stamen.store.recovery import RecoveryRepository, Unsettled
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


def pending_retry_decisions(
    consumer: str,
    pool: asyncpg.Pool,
    decide_retry: Callable[[UnitOfWork, Envelope], Awaitable[None]],
    settings: Settings,
) -> ReconcilePass:
    handler = idempotent(consumer, lambda: pool, decide_retry)

    async def run() -> int:
        async with UnitOfWork(pool) as uow:
            repo = RecoveryRepository(uow.connection)
            waiting = await repo.unhandled_diagnoses(consumer, settings.reconcile_after_seconds)
        return await hand_over(waiting, event_for=lambda item: _diagnosed(pool, item), handler=handler,
                               moved_on=lambda item: _decided(pool, item), what="retry_decided")  # fmt: skip

    return ReconcilePass("scheduler:diagnosed", run)


async def _decided(pool: asyncpg.Pool, item: Unsettled) -> bool:
    async with UnitOfWork(pool) as uow:
        return (await uow.worksets.get(item.workset_id)).state is not WorksetState.FAILED


async def _diagnosed(pool: asyncpg.Pool, item: Unsettled) -> Envelope:
    assert item.event_id is not None  # the diagnosis row's own event id
    async with UnitOfWork(pool) as uow:
        stored = await RecoveryRepository(uow.connection).stored_event(item.event_id)
        if stored is not None:
            return stored
        ws = await uow.worksets.get(item.workset_id)
        diagnosis = next(d for d in await uow.diagnoses.for_workset(ws.id) if d.attempt == item.attempt)
    return diagnosed_event(ws, item.event_id, attempt=diagnosis.attempt, code=diagnosis.code,
                           retry_class=diagnosis.retry_class, retryable=diagnosis.retryable)  # fmt: skip


def lost_retry_timers(pool: asyncpg.Pool, settings: Settings) -> ReconcilePass:
    async def run() -> int:
        async with UnitOfWork(pool) as uow:
            waiting = await RecoveryRepository(uow.connection).waiting_without_timer(
                settings.reconcile_after_seconds
            )
            for item in waiting:
                await uow.timers.add_timer(
                    item.workset_id, "retry", datetime.now(UTC), {"attempt": item.attempt + 1}
                )
                log.warning("reconcile.retry_timer_added", workset_id=item.workset_id)
            await uow.commit()
        return len(waiting)

    return ReconcilePass("scheduler:retry_wait", run)
