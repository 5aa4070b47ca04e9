"""Validation from PostgreSQL while NATS is away.

workset.submitted reaches the validator over NATS; while NATS is away (an outage, or a validator started
before it) the submissions the portal records keep arriving in PostgreSQL and would wait for the bus,
then for the reconciler (STAMEN_RECONCILE_AFTER_SECONDS). So while the bus is not connected (and only
then: the loop waits for the client to lose its connection), every second, worksets submitted more than
a second ago are validated from the database by the consumer's own handler, as the reconciler would:
when their events arrive later they find the workset decided (no longer `submitted` or `validating`) and
do nothing. The scheduler already admits and dispatches from PostgreSQL alone; with this the whole path
from submission to completion goes on without NATS, the events catching up through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from services.validator import reconcile
from services.validator.submission import validate_handler
from stamen.service.keys import BUS, POOL, POSTGRES, SETTINGS
from stamen.service.reconciler import hand_over
from stamen.store.recovery import RecoveryRepository, Unsettled
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
INTERVAL_SECONDS = 1.0
# A workset younger than this is left to its event: NATS may only be blinking.
AFTER_SECONDS = 1.0


async def validate_while_bus_away(app: web.Application) -> int:
    """One pass (nothing when the bus is up): returns how many worksets it validated."""
    if app[BUS].up or not app[POSTGRES].reachable:
        return 0
    pool, settings = app[POOL], app[SETTINGS]
    async with UnitOfWork(pool) as uow:
        waiting = await RecoveryRepository(uow.connection).stale_submissions(
            AFTER_SECONDS, limit=settings.validation_concurrency * 4
        )
    if not waiting:
        return 0
    handler = validate_handler(app, settings)
    slots = asyncio.Semaphore(settings.validation_concurrency)

    async def one(item: Unsettled) -> int:
        async with slots:
            return await hand_over(
                [item],
                event_for=lambda i: reconcile.event_of(pool, i),
                handler=handler,
                moved_on=lambda i: reconcile.validated(pool, i),
                what="validated_while_bus_away",
            )

    moved = sum(await asyncio.gather(*(one(item) for item in waiting)))
    if moved:
        log.info("validator.validated_while_bus_away", worksets=moved)
    return moved


async def bus_away_ctx(app: web.Application) -> AsyncIterator[None]:
    async def run() -> None:
        while True:
            # While the bus is up there is nothing to do: no pass a second (they were a validator's
            # main wake-ups at rest, each a wake-up of the event loop for nothing).
            await app[BUS].wait_down()
            await asyncio.sleep(INTERVAL_SECONDS)
            try:
                await validate_while_bus_away(app)
            except Exception as exc:  # PostgreSQL went too: the next pass (after the gate opens) goes on
                log.warning("validator.bus_away_pass_failed", error=f"{type(exc).__name__}: {exc}")

    task = asyncio.create_task(run(), name="validate-while-bus-away")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
