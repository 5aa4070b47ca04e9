"""Diagnostics' reconcile pass: a workset `failed` for longer than STAMEN_RECONCILE_AFTER_SECONDS with no
diagnosis of its current attempt is diagnosed from PostgreSQL (its workset.failed event as stored in
the outbox, or rebuilt from the step run and the history), by the consumer's own handler under its
inbox claim."""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from services.diagnostics.handlers import diagnose_failure
from stamen.events.envelope import Envelope
from stamen.recovery import failed_event
from stamen.service.idempotent import idempotent
from stamen.service.reconciler import ReconcilePass, hand_over
from stamen.settings import Settings
from stamen.store.recovery import RecoveryRepository, Unsettled
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


def undiagnosed_failures(consumer: str, pool: asyncpg.Pool, settings: Settings) -> ReconcilePass:
    handler = idempotent(consumer, lambda: pool, diagnose_failure)

    async def run() -> int:
        async with UnitOfWork(pool) as uow:
            waiting = await RecoveryRepository(uow.connection).undiagnosed_failures(
                settings.reconcile_after_seconds
            )
        return await hand_over(waiting, event_for=lambda item: _failed(pool, item), handler=handler,
                               moved_on=lambda item: _diagnosed(pool, item), what="diagnosed")  # fmt: skip

    return ReconcilePass("diagnostics:failed", run)


async def _diagnosed(pool: asyncpg.Pool, item: Unsettled) -> bool:
    async with UnitOfWork(pool) as uow:
        return any(d.attempt == item.attempt for d in await uow.diagnoses.for_workset(item.workset_id))


async def _failed(pool: asyncpg.Pool, item: Unsettled) -> Envelope:
    async with UnitOfWork(pool) as uow:
        repo = RecoveryRepository(uow.connection)
        stored = await repo.stored_event(item.event_id) if item.event_id else None
        if stored is not None:
            return stored
        ws = await uow.worksets.get(item.workset_id)
        facts = await repo.failure_facts(ws.id, ws.attempt)
    event_id = item.event_id or uuid.uuid5(uuid.NAMESPACE_URL, f"stamen:{ws.id}:failed:{ws.attempt}")
    return failed_event(ws, event_id, step_run_id=facts.step_run_id, step=facts.step, exit_code=facts.exit_code,
                        signal=facts.signal, step_state=facts.step_state, reason=facts.reason)  # fmt: skip
