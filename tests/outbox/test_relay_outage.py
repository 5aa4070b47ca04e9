"""A relay whose database is away waits for it (its PostgreSQL dependency's probe, every second) instead
of asking the pool for a connection again at once: that loop logged `outbox.listen_failed` hundreds of
times a second in every service for the whole of a PostgreSQL outage, on CPU the rest of the stack needed.
Once the database is back the relay leads again."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog
from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher
from stamen.relay import RELAY_LEADER_LOCK, OutboxRelay
from stamen.service.dependencies import postgres_dependency
from stamen.stack.servers import PostgresServer
from stamen.store.db import create_pool

pytestmark = pytest.mark.slow


async def test_a_relay_waits_out_a_database_outage_without_spinning(
    own_postgres: PostgresServer, js: JetStreamContext
) -> None:
    pool = await create_pool(own_postgres.url, max_size=3)
    relay = OutboxRelay(
        pool, JetStreamPublisher(js), poll_seconds=60, leader_lock=RELAY_LEADER_LOCK,
        postgres=postgres_dependency(pool),
    )  # fmt: skip
    await relay.start()
    try:
        deadline = time.monotonic() + 20
        while not relay.leading:
            assert time.monotonic() < deadline, "the relay never led"
            await asyncio.sleep(0.05)
        with structlog.testing.capture_logs() as logs:
            own_postgres.kill()
            await asyncio.sleep(4)
        tries = [e for e in logs if e["event"] in ("outbox.listen_failed", "outbox.relay_lead_failed")]
        assert len(tries) <= 8, f"{len(tries)} connection attempts in 4 s"
        own_postgres.start()
        deadline = time.monotonic() + 30
        while not relay.leading:
            assert time.monotonic() < deadline, "the relay did not lead again after the database came back"
            await asyncio.sleep(0.1)
    finally:
        await relay.stop()
        await pool.close()
