"""One row never holds back the others (real PostgreSQL and nats-server): a row the broker refuses, here
a workset.submitted written by a release that still put the whole spec in the event (over the broker's max
payload), is retried a few times and parked with the broker's answer while every row behind it
is published; operators see it (CLI and API) and can hand it back. An unreachable broker blames no row."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher
from stamen.events import new_envelope
from stamen.events.types import WorksetQueued
from stamen.relay import OutboxRelay
from stamen.retry.backoff import BackoffPolicy
from stamen.store.outbox import OutboxQueue, OutboxWriter
from stamen.worksets.limits import NATS_MAX_PAYLOAD

FAST = BackoffPolicy(initial_seconds=0.05, factor=1.0, cap_seconds=0.05, jitter="none")


def old_style_submitted(samples: int) -> tuple[str, bytes, dict[str, str]]:
    """What the outbox held before the claim check: the spec inside the event."""
    event_id = str(uuid.uuid4())
    spec = {
        "name": "huge",
        "samples": [
            {
                "id": f"S{i}",
                "platform": "ILMN",
                "r1": f"s3://lab/reads/sample-{i:05d}_R1.fastq.gz",
                "r2": f"s3://lab/reads/sample-{i:05d}_R2.fastq.gz",
            }
            for i in range(samples)
        ],
    }
    body = json.dumps(
        {
            "id": event_id,
            "type": "workset.submitted",
            "occurred_at": "2026-01-01T00:00:00Z",
            "workset_id": "ws-huge",
            "tenant_id": "acme",
            "region": "us-west-2",
            "correlation_id": event_id,
            "schema_version": 1,
            "payload": {"name": "huge", "source": "api", "spec": spec},
        }
    ).encode()
    headers = {"Nats-Msg-Id": event_id, "Stamen-Event-Type": "workset.submitted", "Stamen-Tenant": "acme"}
    return event_id, body, headers


async def add_oversized(pool: asyncpg.Pool) -> tuple[str, bytes]:
    """An old-style workset.submitted of 70,000 samples in the outbox: more than the broker takes."""
    event_id, body, headers = old_style_submitted(70_000)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, $2, $3, $4)",
            uuid.UUID(event_id),
            "stamen.evt.acme.workset.submitted",
            json.dumps(headers),
            body,
        )
    return event_id, body


async def add_events(pool: asyncpg.Pool, count: int, tenant: str = "other") -> None:
    async with pool.acquire() as conn:
        await OutboxWriter(conn).add(
            [
                new_envelope(WorksetQueued(), tenant_id=tenant, region="us-west-2", workset_id=f"ws-{i}")
                for i in range(count)
            ]
        )


async def test_a_row_the_broker_refuses_is_parked_and_the_rest_flow(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    await add_events(pool, 3)
    event_id, body = await add_oversized(pool)
    assert len(body) > NATS_MAX_PAYLOAD  # what stamen's nats-server accepts at most
    await add_events(pool, 3)
    async with pool.acquire() as conn:
        written = await conn.fetchrow(
            "SELECT id, created_at FROM outbox WHERE event_id = $1", uuid.UUID(event_id)
        )
    relay = OutboxRelay(pool, JetStreamPublisher(js), poll_seconds=0.05, max_attempts=3)
    relay.ROW_BACKOFF = FAST
    started = time.monotonic()
    await relay.start()
    try:
        while True:
            async with pool.acquire() as conn:
                parked = await OutboxQueue(conn).parked()
                pending = await conn.fetchval("SELECT count(*) FROM outbox")
            if parked:
                break
            assert time.monotonic() - started < 15, "the refused row was never parked"
            await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    assert pending == 1  # only the parked row: the six around it went out
    assert (await js.stream_info("STAMEN_EVENTS")).state.messages == 6
    [row] = parked
    assert row.event_id == event_id and row.attempts == 3 and row.size_bytes == len(body)
    # Each refusal put the claimed (deleted) row back as it was: its id (its place in the order) and when
    # it was committed.
    assert (row.id, row.created_at) == (written["id"], written["created_at"])
    assert "MaxPayloadError" in row.last_error

    # Handed back (e.g. after the broker's max_payload was raised): a fresh attempt budget.
    async with pool.acquire() as conn:
        assert await OutboxQueue(conn).unpark([row.id, 999_999]) == [row.id]
        assert await OutboxQueue(conn).parked() == []
        assert await conn.fetchval("SELECT attempts FROM outbox WHERE id = $1", row.id) == 0


class Unreachable:
    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        raise NatsTimeoutError


async def test_an_unreachable_broker_blames_no_row(pool: asyncpg.Pool) -> None:
    await add_events(pool, 2)
    relay = OutboxRelay(pool, Unreachable(), max_attempts=1)
    for _ in range(3):
        with pytest.raises(NatsTimeoutError):
            await relay.publish_pending()
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT attempts, parked_at, last_error FROM outbox")
    assert [(r["attempts"], r["parked_at"], r["last_error"]) for r in rows] == [(0, None, None)] * 2


async def test_a_refused_row_is_tried_again_when_due_not_at_the_next_poll(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    """The relay's poll is long (a safety net: NOTIFY wakes it); a row it set aside wakes it when its
    next attempt is due, with no commit to send a NOTIFY."""
    await add_oversized(pool)
    relay = OutboxRelay(pool, JetStreamPublisher(js), poll_seconds=3600, max_attempts=3)
    relay.ROW_BACKOFF = FAST
    await relay.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            async with pool.acquire() as conn:
                parked = await OutboxQueue(conn).parked()
            if parked:
                break
            assert time.monotonic() < deadline, "the refused row was not tried again when due"
            await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    assert parked[0].attempts == 3
