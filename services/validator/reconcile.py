"""The validator's reconcile pass: worksets still `submitted` (or `validating`) after
STAMEN_RECONCILE_AFTER_SECONDS are validated from PostgreSQL, by the consumer's own handler and under
its inbox claim, whether workset.submitted was lost, parked in STAMEN_DLQ or is only late."""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from services.validator.handlers import AWAITING_VALIDATION
from stamen.bus.consumer import EventHandler, RetryLater
from stamen.events.envelope import Envelope, UndecodableMessage
from stamen.recovery import submitted_event
from stamen.service.reconciler import RECONCILED, ReconcilePass
from stamen.settings import Settings
from stamen.store.errors import WorksetNotFound
from stamen.store.recovery import RecoveryRepository, Unsettled
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


def stale_submissions(pool: asyncpg.Pool, handler: EventHandler, settings: Settings) -> ReconcilePass:
    async def run() -> int:
        async with UnitOfWork(pool) as uow:
            waiting = await RecoveryRepository(uow.connection).stale_submissions(settings.reconcile_after_seconds)
        moved = 0
        for item in waiting:
            try:
                event = await _submitted(pool, item)
                await handler(event, RECONCILED)
            except RetryLater as later:  # storage unreachable: the next pass tries again
                log.info("reconcile.validation_deferred", workset_id=item.workset_id, reason=str(later))
                continue
            except (WorksetNotFound, UndecodableMessage):
                continue  # purged meanwhile
            async with UnitOfWork(pool) as uow:
                state = (await uow.worksets.get(item.workset_id)).state
            if state not in AWAITING_VALIDATION:
                log.warning("reconcile.validated", workset_id=item.workset_id, state=state.value,
                            waited_seconds=round(item.age_seconds))  # fmt: skip
                moved += 1
        return moved

    return ReconcilePass("validator:submitted", run)


async def _submitted(pool: asyncpg.Pool, item: Unsettled) -> Envelope:
    async with UnitOfWork(pool) as uow:
        stored = await RecoveryRepository(uow.connection).stored_event(item.event_id) if item.event_id else None
        if stored is not None:
            return stored
        ws = await uow.worksets.get(item.workset_id)
    return submitted_event(ws, item.event_id or uuid.uuid5(uuid.NAMESPACE_URL, f"stamen:{ws.id}:submitted"))
