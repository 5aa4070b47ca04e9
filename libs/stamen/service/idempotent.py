"""Exactly-once effects on at-least-once delivery: the inbox claim commits with the handler's changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from stamen.bus.consumer import Delivery, EventHandler
from stamen.events.envelope import Envelope
from stamen.service.poison import known_workset
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

TransactionalHandler = Callable[[UnitOfWork, Envelope], Awaitable[None]]


def idempotent(consumer: str, pool: Callable[[], asyncpg.Pool], handle: TransactionalHandler) -> EventHandler:
    """Wrap `handle` so it runs in one transaction with the inbox claim; a redelivery is a no-op."""

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        async with UnitOfWork(pool()) as uow:
            if not await uow.inbox.claim(consumer, envelope.id):
                log.info("inbox.duplicate_skipped", delivery=delivery.num_delivered)
                return
            async with known_workset(envelope):
                await handle(uow, envelope)
            await uow.commit()

    return handler
