"""1,000 state changes while relays are SIGKILLed at random points: every event arrives, once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import asyncpg
from nats.js import JetStreamContext

from stamen.bus.consumer import ConsumerSpec, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import EVENTS_STREAM
from stamen.events import Envelope
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.store.unit_of_work import UnitOfWork

TOTAL = 1000


def start_relay(database_url: str, nats_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url, "STAMEN_OUTBOX_BATCH_SIZE": "25"}
    return subprocess.Popen(
        [sys.executable, "-m", "stamen", "relay"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_relay_killed_at_random_points_loses_nothing_and_duplicates_nothing(
    pool: asyncpg.Pool, database_url: str, nats_url: str, js: JetStreamContext
) -> None:
    rng = random.Random(1234)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE test_effects (event_id UUID PRIMARY KEY)")
    handled = 0

    async def effect(uow: UnitOfWork, event: Envelope) -> None:
        nonlocal handled
        # A second effect for the same event would violate the primary key and fail the test.
        await uow.connection.execute("INSERT INTO test_effects (event_id) VALUES ($1)", event.id)
        handled += 1

    consumer = DurableConsumer(
        js,
        ConsumerSpec(
            "downstream", ["stamen.evt.>"], idempotent("downstream", lambda: pool, effect), concurrency=16
        ),
        JetStreamPublisher(js),
    )
    await consumer.start()

    async def writer() -> None:
        for i in range(TOTAL):
            await submit_workset(
                pool,
                tenant_id=f"t{i % 5}",
                name=f"w{i}",
                spec={"i": i},
                region="us-west-2",
                source="cli",
                actor="test",
            )
            if i % 20 == 0:
                await asyncio.sleep(0.05)

    writing = asyncio.create_task(writer())
    kills = 0
    deadline = time.monotonic() + 240
    while not writing.done() and time.monotonic() < deadline:
        relay = start_relay(database_url, nats_url)
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        kills += 1
    await writing
    survivor = start_relay(database_url, nats_url)
    try:
        while time.monotonic() < deadline:
            async with pool.acquire() as conn:
                effects = await conn.fetchval("SELECT count(*) FROM test_effects")
            if effects >= TOTAL:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let any late duplicate arrive
    finally:
        survivor.terminate()
        survivor.wait(10)
        await consumer.stop(5)

    async with pool.acquire() as conn:
        effects = await conn.fetchval("SELECT count(*) FROM test_effects")
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox")
        inbox = await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'downstream'")
    stored = (await js.stream_info(EVENTS_STREAM)).state.messages
    print(f"relay kills={kills} effects={effects} stream_messages={stored} handled={handled}")
    assert kills >= 3
    assert effects == TOTAL and handled == TOTAL and inbox == TOTAL
    assert unpublished == 0
    assert stored == TOTAL  # re-publishes after a kill were dropped by the server's dedup window
