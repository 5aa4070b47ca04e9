"""cleanup_ctx generators: each opens one resource at start-up and closes it at shutdown.

aiohttp runs them in order and tears them down in reverse, so consumers drain first, then the
relay, then NATS, then the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.consumer import DurableConsumer
from stamen.bus.deadletter import DeadLetterForwarder
from stamen.bus.publisher import JetStreamPublisher
from stamen.relay import OutboxRelay
from stamen.service.keys import (
    CONSUMER_SPECS,
    CONSUMERS,
    JETSTREAM,
    NATS_CLIENT,
    POOL,
    PUBLISHER,
    SERVICE_NAME,
    SETTINGS,
)
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations

log = structlog.get_logger(__name__)


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.require_database_url())
    async with pool.acquire() as conn:
        # Safe from every service at once: migrations take an advisory lock.
        applied = await apply_migrations(conn)  # type: ignore[arg-type]
    if applied:
        log.info("store.migrated", versions=applied)
    app[POOL] = pool
    yield
    await pool.close()


async def nats_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    nc = await connect_nats(settings.require_nats_url(), name=app[SERVICE_NAME])
    js = nc.jetstream()
    await ensure_streams(
        js, dedup_window_seconds=settings.dedup_window_seconds, replicas=settings.stream_replicas
    )
    app[NATS_CLIENT] = nc
    app[JETSTREAM] = js
    app[PUBLISHER] = JetStreamPublisher(js)
    yield
    await nc.drain()


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    relay = OutboxRelay.from_settings(app[POOL], app[PUBLISHER], settings)
    await relay.start()
    yield
    await relay.stop()


async def consumers_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    consumers = [DurableConsumer(app[JETSTREAM], spec, app[PUBLISHER]) for spec in app[CONSUMER_SPECS]]
    forwarders = [
        DeadLetterForwarder(app[JETSTREAM], app[PUBLISHER], spec.durable) for spec in app[CONSUMER_SPECS]
    ]
    for c in consumers:
        await c.start()
    for f in forwarders:
        await f.start()
    app[CONSUMERS] = consumers
    log.info("service.consuming", consumers=[c.spec.durable for c in consumers])
    yield
    log.info("service.draining", timeout=settings.drain_timeout_seconds)
    for c in consumers:
        await c.stop(settings.drain_timeout_seconds)
    for f in forwarders:
        await f.stop()
