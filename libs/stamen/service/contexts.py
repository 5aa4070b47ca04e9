"""cleanup_ctx generators: each opens one resource at start-up and closes it at shutdown.

aiohttp runs them in order and tears them down in reverse, so consumers drain first, then the
relay, then NATS, then the pool.

A service starts whatever state its dependencies are in: PostgreSQL is waited for (the parts of every
service need it), NATS is connected in the background (the scheduler admits and dispatches from the
database alone; consumers start once NATS is there, and events catch up through the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import structlog
from aiohttp import web

from stamen.bus.connections import BusConnection
from stamen.bus.consumer import DurableConsumer
from stamen.bus.deadletter import DeadLetterForwarder
from stamen.dlq_messages import reconcile_messages
from stamen.relay import OutboxRelay
from stamen.service.backoff import FailureBackoff
from stamen.service.dependencies import open_when_reachable, postgres_dependency
from stamen.service.keys import (
    BUS,
    CONSUMER_SPECS,
    CONSUMERS,
    POOL,
    POSTGRES,
    RECONCILE_PASSES,
    SERVICE_NAME,
    SETTINGS,
    STARTUP,
)
from stamen.service.reconciler import ReconcilePass, Reconciler
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations

log = structlog.get_logger(__name__)


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = settings.require_database_url()

    async def open_migrated() -> asyncpg.Pool:
        pool = await create_pool(dsn)
        try:
            async with pool.acquire() as conn:
                # Safe from every service at once: migrations take an advisory lock.
                applied = await apply_migrations(conn)  # type: ignore[arg-type]
        except BaseException:
            await pool.close()
            raise
        if applied:
            log.info("store.migrated", versions=applied)
        return pool

    pool = await open_when_reachable("postgres", open_migrated, app[STARTUP])
    app[POOL] = pool
    app[POSTGRES] = postgres_dependency(pool)
    yield
    await app[POSTGRES].close()
    await pool.close()


async def nats_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    bus = BusConnection(
        settings.require_nats_url(),
        name=app[SERVICE_NAME],
        dedup_window_seconds=settings.dedup_window_seconds,
        replicas=settings.stream_replicas,
        placement_tags=settings.stream_placement_tags,
    )
    await bus.start()
    app[BUS] = bus
    yield
    await bus.close()


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # While NATS reconnects, its publishes wait for it (up to 30 s), then the backlog goes out at once.
    relay = OutboxRelay.from_settings(app[POOL], app[BUS], settings, postgres=app[POSTGRES])
    await relay.start()
    yield
    await relay.stop()


async def consumers_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    consumers: list[DurableConsumer] = []
    forwarders: list[DeadLetterForwarder] = []
    app[CONSUMERS] = consumers

    async def start_consumers() -> None:
        bus = app[BUS]
        for spec in app[CONSUMER_SPECS]:
            consumer = DurableConsumer(bus.js, spec, bus, gate=app[POSTGRES])
            await _until_done(consumer.start, spec.durable)
            consumers.append(consumer)
            bus.on_reconnect(consumer.refetch)
            forwarder = DeadLetterForwarder(bus.js, bus, spec.durable)
            await _until_done(forwarder.start, f"dlq-forwarder-{spec.durable}")
            forwarders.append(forwarder)
            bus.on_reconnect(forwarder.refetch)
        log.info("service.consuming", consumers=[c.spec.durable for c in consumers])

    starting = await start_with_bus(app, start_consumers, "consumers")
    yield
    log.info("service.draining", timeout=settings.drain_timeout_seconds)
    await cancel_start(starting)
    for c in consumers:
        await c.stop(settings.drain_timeout_seconds)
    for f in forwarders:
        await f.stop()


async def _until_done(start: Callable[[], Awaitable[None]], what: str) -> None:
    """NATS may go away again between the connect and a start: keep trying, with growing delays."""
    backoff = FailureBackoff(1.0, 10.0)
    while True:
        try:
            await start()
        except Exception as exc:
            delay = backoff.failed()
            log.warning("service.consumer_not_started", consumer=what, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
        else:
            return


async def start_with_bus(
    app: web.Application, start: Callable[[], Awaitable[None]], what: str
) -> asyncio.Task[None] | None:
    """Run `start` now if NATS is connected (the usual case: the service is complete once started),
    else in the background as soon as it is; returns that background task, to cancel at shutdown."""
    bus = app[BUS]
    if bus.connected.is_set():
        await start()
        return None

    async def later() -> None:
        await bus.wait()
        await start()

    return asyncio.create_task(later(), name=f"start-with-bus:{what}")


async def cancel_start(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def reconciler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The service's reconcile passes (stamen.service.reconciler), every STAMEN_RECONCILE_INTERVAL_SECONDS."""
    passes = app[RECONCILE_PASSES](app)
    if app[CONSUMER_SPECS]:
        passes.append(parked_messages_pass(app))
    if not passes:
        yield
        return
    reconciler = Reconciler(
        passes, interval_seconds=app[SETTINGS].reconcile_interval_seconds, postgres=app[POSTGRES]
    )
    task = asyncio.create_task(reconciler.run(), name="reconciler")
    log.info("reconcile.on", passes=[p.name for p in passes])
    yield
    reconciler.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def parked_messages_pass(app: web.Application) -> ReconcilePass:
    """This service's consumers' messages parked in STAMEN_DLQ: replayed or resolved when safe
    (stamen.dlq_messages). Skipped while NATS is not connected."""
    settings = app[SETTINGS]
    consumers = [spec.durable for spec in app[CONSUMER_SPECS]]

    async def run() -> int:
        bus = app[BUS]
        if not bus.connected.is_set():
            return 0
        counts = await reconcile_messages(
            bus.js,
            app[POOL],
            consumers,
            actor=f"reconciler:{app[SERVICE_NAME]}",
            after_seconds=settings.reconcile_after_seconds,
            max_replays=settings.dlq_auto_replay_max,
        )
        return counts["replay"] + counts["resolve"]

    return ReconcilePass("dlq:parked_messages", run)
