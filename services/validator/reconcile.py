"""The validator's reconcile pass: worksets still `submitted` (or `validating`) after
STAMEN_RECONCILE_AFTER_SECONDS are validated from PostgreSQL, by the consumer's own handler (its decision
is applied once: only to a workset still awaiting validation, under its row lock), whether
workset.submitted was lost, parked in STAMEN_DLQ or is only late."""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from services.validator.handlers import AWAITING_VALIDATION
from stamen.bus.consumer import EventHandler
from stamen.events.envelope import Envelope
from stamen.recovery import submitted_event
from stamen.service.reconciler import ReconcilePass, hand_over
from stamen.settings import Settings
from stamen.store.recovery import RecoveryRepository, Unsettled
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


def stale_submissions(pool: asyncpg.Pool, handler: EventHandler, settings: Settings) -> ReconcilePass:
    async def run() -> int:
        async with UnitOfWork(pool) as uow:
            waiting = await RecoveryRepository(uow.connection).stale_submissions(
                settings.reconcile_after_seconds
            )
        return await hand_over(waiting, event_for=lambda item: event_of(pool, item), handler=handler,
                               moved_on=lambda item: validated(pool, item), what="validated")  # fmt: skip

    return ReconcilePass("validator:submitted", run)


# Shared with validation while NATS is away (bus_away.py): whether a workset moved on, and its event.


async def validated(pool: asyncpg.Pool, item: Unsettled) -> bool:
    async with UnitOfWork(pool) as uow:
        return (await uow.worksets.get(item.workset_id)).state not in AWAITING_VALIDATION


async def event_of(pool: asyncpg.Pool, item: Unsettled) -> Envelope:
    async with UnitOfWork(pool) as uow:
        stored = (
            await RecoveryRepository(uow.connection).stored_event(item.event_id) if item.event_id else None
        )
        if stored is not None:
            return stored
        ws = await uow.worksets.get(item.workset_id)
    return submitted_event(ws, item.event_id or uuid.uuid5(uuid.NAMESPACE_URL, f"stamen:{ws.id}:submitted"))
