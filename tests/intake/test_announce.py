"""A submission's workset.submitted is published as soon as it has committed (stamen.bus.announce), before
the outbox relay has run; the relay's copy of the same row is dropped by JetStream as a duplicate, so the
stream holds the event once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from stamen.bus.announce import announcer
from stamen.bus.connections import BusConnection
from stamen.bus.subjects import EVENTS_STREAM, event_filter
from stamen.events.envelope import decode_envelope
from stamen.intake import submit_workset
from stamen.relay import OutboxRelay


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[BusConnection]:
    connection = BusConnection(nats_url, name="announce-test", dedup_window_seconds=600)
    await connection.start(wait_seconds=30)
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_submission_is_published_once_committed_and_the_relays_copy_is_a_duplicate(
    pool: asyncpg.Pool, bus: BusConnection
) -> None:
    submitted = await submit_workset(
        pool, tenant_id="acme", name="w", spec={"name": "w"}, region="us-west-2", source="api", actor="t",
        announce=announcer(bus),
    )  # fmt: skip
    # No relay has run: the row is still unpublished, yet the event is in the stream.
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    inbox = await bus.js.pull_subscribe(event_filter("workset.submitted"), stream=EVENTS_STREAM)
    [message] = await inbox.fetch(1, timeout=30)  # waits for it to arrive; not a speed bound
    event = decode_envelope(message.data)
    assert event.workset_id == submitted.workset_id and event.type == "workset.submitted"
    # The relay publishes the row as always; the server drops it (same Nats-Msg-Id): one copy.
    assert await OutboxRelay(pool, bus, poll_seconds=60).publish_pending() == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 1


async def test_without_nats_a_submission_commits_and_waits_for_nothing(pool: asyncpg.Pool) -> None:
    """NATS never reached: the announcement is skipped (the relay publishes the row once NATS is back)."""
    away = BusConnection("nats://127.0.0.1:1", name="announce-test", dedup_window_seconds=600)
    submitted = await submit_workset(
        pool, tenant_id="acme", name="w", spec={"name": "w"}, region="us-west-2", source="api", actor="t",
        announce=announcer(away),
    )  # fmt: skip
    assert submitted.created
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
