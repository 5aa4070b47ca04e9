"""The outbox relay's promises, each forced deterministically against real PostgreSQL and NATS.

- published once: a relay that publishes and then fails before its pass commits leaves the row for the next
  pass, whose re-publish JetStream drops by its Nats-Msg-Id;
- several relays can run: FOR UPDATE SKIP LOCKED hands each row to exactly one of them;
- relays are woken by LISTEN/NOTIFY, not by their (here very slow) poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

import asyncpg
import pytest
import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher, RawPublisher
from stamen.bus.subjects import EVENTS_STREAM
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued
from stamen.relay import OutboxRelay, pass_settings
from stamen.store.db import create_pool
from stamen.store.outbox import OutboxQueue, OutboxWriter


class RecordingPublisher:
    """The real JetStream publisher, remembering each publish and whether the stream stored it."""

    def __init__(self, inner: JetStreamPublisher, *, delay: float = 0.0) -> None:
        self._inner = inner
        self._delay = delay
        self.results: list[tuple[str, bool]] = []

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        if self._delay:
            await asyncio.sleep(self._delay)  # holds the claimed rows' locks a little longer
        fresh = await self._inner.publish_raw(subject, body, headers)
        self.results.append((headers["Nats-Msg-Id"], fresh))
        return fresh


class SimulatedCrash(ConnectionResetError):
    pass


def queued_event(i: int = 0) -> Envelope:
    return new_envelope(
        WorksetQueued(attempt=1), tenant_id=f"t{i % 3}", region="us-west-2", workset_id=f"ws-{i}"
    )


async def commit_events(pool: asyncpg.Pool, events: Sequence[Envelope]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await OutboxWriter(conn).add(events)


async def unpublished(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))


async def stream_messages(js: JetStreamContext) -> list[tuple[str, str]]:
    """Every message in the events stream as (Nats-Msg-Id header, envelope id in the body)."""
    expected = (await js.stream_info(EVENTS_STREAM)).state.messages
    sub = await js.pull_subscribe("stamen.evt.>", stream=EVENTS_STREAM)
    found: list[tuple[str, str]] = []
    try:
        while len(found) < expected:
            try:
                msgs = await sub.fetch(min(expected - len(found), 200), timeout=5)
            except NatsTimeoutError:
                raise AssertionError(f"read {len(found)} of {expected} stream messages") from None
            for msg in msgs:
                assert msg.headers is not None
                found.append((msg.headers["Nats-Msg-Id"], json.loads(msg.data)["id"]))
    finally:
        await sub.unsubscribe()
    return found


async def claimable(pool: asyncpg.Pool) -> int:
    """How many rows a relay's claim would get now (its marks rolled back)."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            return len(await OutboxQueue(conn).claim(10))
        finally:
            await tx.rollback()


async def wait_until_all_published(pool: asyncpg.Pool, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while await unpublished(pool):
        assert time.monotonic() < deadline, f"{what}: rows still unpublished after {timeout}s"
        await asyncio.sleep(0.02)


class LostAfterPublishing:
    """The real JetStream publisher, except that its first `lose` publishes fail after the stream has
    stored the message: the exact window the dedup id covers (the stream has it, the row does not say
    so, since the pass's transaction is rolled back: its claim's delete with it)."""

    def __init__(self, inner: RecordingPublisher, lose: int = 1) -> None:
        self._inner = inner
        self._lose = lose

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        fresh = await self._inner.publish_raw(subject, body, headers)
        if self._lose > 0:
            self._lose -= 1
            raise SimulatedCrash("relay lost its database connection after publishing")
        return fresh


async def test_publish_then_failure_before_the_commit_ends_with_one_message_and_the_row_gone(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    event = queued_event()
    await commit_events(pool, [event])
    publisher = RecordingPublisher(JetStreamPublisher(js))
    relay = OutboxRelay(pool, LostAfterPublishing(publisher), poll_seconds=60)

    with pytest.raises(SimulatedCrash):
        await relay.publish_pending()
    assert await unpublished(pool) == 1  # the claim's transaction rolled back: the row is pending again
    assert await stream_messages(js) == [(str(event.id), str(event.id))]

    assert await relay.publish_pending() == 1  # "run the relay again"
    assert publisher.results == [(str(event.id), True), (str(event.id), False)]  # second: server dedup
    assert await stream_messages(js) == [(str(event.id), str(event.id))]
    assert await unpublished(pool) == 0
    assert await relay.publish_pending() == 0


async def test_a_published_row_leaves_the_outbox_in_the_pass_that_published_it(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    """Nothing reads a published row (a reconciler rebuilds its event from the database), so the pass
    deletes it rather than marking it published for a purge to delete later: one write per event, not
    three. Rows committed meanwhile stay for the next pass."""
    events = [queued_event(i) for i in range(4)]
    await commit_events(pool, events[:3])
    relay = OutboxRelay(pool, JetStreamPublisher(js), poll_seconds=60)
    assert await relay.publish_pending() == 3
    await commit_events(pool, events[3:])
    async with pool.acquire() as conn:
        left = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM outbox")]
    assert left == [events[3].id]
    assert [m for m, _ in await stream_messages(js)] == [str(e.id) for e in events[:3]]


async def test_running_relay_recovers_from_a_failure_after_publishing_without_a_duplicate(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    """The same window, through the relay's own loop: it logs, backs off, and its retry is deduplicated."""
    events = [queued_event(i) for i in range(3)]
    publisher = RecordingPublisher(JetStreamPublisher(js))
    # After a failed pass the relay backs off (1 s) and tries again by itself: no further commit
    # comes here and the poll is 60 s, so only the relay's own retry can publish the rows in time.
    relay = OutboxRelay(pool, LostAfterPublishing(publisher), poll_seconds=60)
    await commit_events(pool, events)
    await relay.start()
    try:
        await wait_until_all_published(pool, 15, "after the failed pass")
    finally:
        await relay.stop()
    ids = {str(e.id) for e in events}
    # The first pass published the first row and failed; the retry published all three.
    first = str(events[0].id)
    assert publisher.results[0] == (first, True)
    assert sorted(publisher.results[1:]) == sorted([(first, False)] + [(i, True) for i in ids - {first}])
    messages = await stream_messages(js)
    assert len(messages) == 3 and {m for m, _ in messages} == ids


async def test_a_pass_is_three_round_trips_and_its_claim_walks_the_index_in_order(
    database_url: str, js: JetStreamContext
) -> None:
    """BEGIN (with its settings), the claim that also deletes the rows, COMMIT: no separate mark. And the
    claim, under the pass's settings, reads the primary key in id order up to its LIMIT, not a bitmap of
    every entry followed by a sort."""
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: statements.append(q.query))

    pool = await create_pool(database_url, init=log_queries)
    try:
        relay = OutboxRelay(pool, JetStreamPublisher(js), poll_seconds=60)
        await commit_events(pool, [queued_event(i) for i in range(5)])
        assert await relay.publish_pending() == 5  # the connection's first: asyncpg learns the types
        await commit_events(pool, [queued_event(i) for i in range(5, 10)])
        statements.clear()
        assert await relay.publish_pending() == 5
        assert len(statements) == 3, statements
        assert statements[0].startswith("BEGIN;") and statements[2] == "COMMIT"
        assert statements[1].lstrip().startswith("DELETE FROM outbox")
        assert await unpublished(pool) == 0

        claim = statements[1]
        async with pool.acquire() as conn:
            # Statistics not fresh (as between autovacuums): left to itself, the planner takes a bitmap.
            await commit_events(pool, [queued_event(i) for i in range(200)])
            await conn.execute(f"BEGIN; {pass_settings(OutboxRelay.HOLD_ROWS_SECONDS)}")
            try:
                plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {claim}", 7))
            finally:
                await conn.execute("ROLLBACK")
        assert "Index Scan using outbox_pkey" in plan, plan
        assert "Bitmap" not in plan and "Sort" not in plan, plan
    finally:
        await pool.close()


class NatsOutage:
    """The real JetStream publisher, except while `down`: then every publish fails as with NATS gone."""

    def __init__(self, inner: JetStreamPublisher) -> None:
        self._inner = inner
        self.down = True

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        if self.down:
            raise ConnectionRefusedError("nats: no servers available for connection")
        return await self._inner.publish_raw(subject, body, headers)


class QuickBackoffRelay(OutboxRelay):
    ERROR_BACKOFF = (0.1, 0.4)


async def failures_logged(logs: list[MutableMapping[str, Any]], more_than: int, within: float) -> None:
    deadline = time.monotonic() + within
    while len([e for e in logs if e["event"] == "outbox.relay_failed"]) <= more_than:
        assert time.monotonic() < deadline, f"no relay failure after the first {more_than} in {within}s"
        await asyncio.sleep(0.02)


async def test_a_relay_that_cannot_publish_backs_off_and_starts_again_from_the_first_delay(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    publisher = NatsOutage(JetStreamPublisher(js))
    relay = QuickBackoffRelay(pool, publisher, poll_seconds=60)
    with structlog.testing.capture_logs() as logs:
        await relay.start()
        try:
            # Commits keep coming during the outage: their NOTIFYs must not cut the backoff short.
            outage_ends = time.monotonic() + 1.5
            i = 0
            while time.monotonic() < outage_ends:
                await commit_events(pool, [queued_event(i)])
                i += 1
                await asyncio.sleep(0.05)
            during_outage = [e for e in logs if e["event"] == "outbox.relay_failed"]
            publisher.down = False
            await wait_until_all_published(pool, 10, "after NATS came back")
            # Counted only now: a failure of the first outage may be logged just after the snapshot
            # above, but always before the success that marked every row.
            before_second_outage = len([e for e in logs if e["event"] == "outbox.relay_failed"])
            publisher.down = True
            await commit_events(pool, [queued_event(i)])
            await failures_logged(logs, before_second_outage, within=10)
            publisher.down = False
            await wait_until_all_published(pool, 10, "after the second outage")
        finally:
            await relay.stop()
    # Tries at about 0, 0.1, 0.3, 0.7, 1.1, 1.5 s, however many commits came (about 30).
    assert 2 <= len(during_outage) <= 8, f"{len(during_outage)} failed passes in 1.5 s of outage"
    assert [e["retry_in"] for e in during_outage] == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4][
        : len(during_outage)
    ]
    assert "no servers available" in during_outage[0]["error"]
    after_recovery = [e for e in logs if e["event"] == "outbox.relay_failed"][before_second_outage]
    assert after_recovery["retry_in"] == 0.1  # the success reset the backoff
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == i + 1


async def test_two_relays_publish_every_event_exactly_once_while_rows_are_committed(
    database_url: str, pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    total = 500
    events = [queued_event(i) for i in range(total)]
    # Each relay has its own pool and publisher, as two service processes would.
    pools = [await create_pool(database_url, max_size=3) for _ in range(2)]
    publishers = [RecordingPublisher(JetStreamPublisher(js), delay=0.002) for _ in range(2)]
    relays = [
        OutboxRelay(p, pub, batch_size=20, poll_seconds=60) for p, pub in zip(pools, publishers, strict=True)
    ]
    try:
        for relay in relays:
            await relay.start()
        # Committed in small transactions while both relays are already working.
        for start in range(0, total, 5):
            await commit_events(pool, events[start : start + 5])
            if start % 50 == 0:
                await asyncio.sleep(0.01)
        await wait_until_all_published(pool, 30, "two relays")
    finally:
        for relay in relays:
            await relay.stop()
        for p in pools:
            await p.close()

    ids = {str(e.id) for e in events}
    published = [r for pub in publishers for r in pub.results]
    # Not one row went to both relays: no publish was a duplicate the server had to drop.
    assert len(published) == total, f"{len(published)} publishes for {total} rows"
    assert all(fresh for _, fresh in published)
    assert {msg_id for msg_id, _ in published} == ids
    assert all(pub.results for pub in publishers), [len(pub.results) for pub in publishers]

    messages = await stream_messages(js)
    assert len(messages) == total
    assert {msg_id for msg_id, _ in messages} == ids
    assert all(msg_id == body_id for msg_id, body_id in messages)


class IdleSignallingRelay(OutboxRelay):
    """An OutboxRelay that says when it has gone to sleep waiting for a wake-up.

    Its loop clears its wake flag before each pass and runs housekeeping (purge_history) right before
    it waits, with no await in between, so once `idle` is seen set the relay is waiting (or about to,
    with any NOTIFY that came during the pass still set) and only a NOTIFY (or the 60 s poll) can
    wake it.
    """

    PURGE_EVERY_SECONDS = 0.0  # housekeeping on every idle pass, so every pass signals

    def __init__(self, pool: asyncpg.Pool, publisher: RawPublisher, *, poll_seconds: float) -> None:
        super().__init__(pool, publisher, poll_seconds=poll_seconds)
        self.idle = asyncio.Event()

    async def purge_history(self) -> int:
        count = await super().purge_history()
        self.idle.set()
        return count


async def test_idle_relay_is_woken_by_notify_long_before_its_poll(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    relay = IdleSignallingRelay(pool, JetStreamPublisher(js), poll_seconds=60)
    await relay.start()
    latencies: list[float] = []
    try:
        for i in range(3):
            await asyncio.wait_for(relay.idle.wait(), 10)
            relay.idle.clear()
            started = time.monotonic()
            await commit_events(pool, [queued_event(i)])
            await wait_until_all_published(pool, 2.0, f"event {i} (relay polls every 60 s)")
            latencies.append(time.monotonic() - started)
    finally:
        await relay.stop()
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 3
    print(f"notify-to-published latencies: {[f'{s:.3f}' for s in latencies]}")


class HangingPublisher:
    """A broker call that never returns: the relay stalls holding its claimed rows."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_relay_stalled_while_publishing_frees_its_rows_after_the_hold_time(
    pool: asyncpg.Pool,
) -> None:
    """PostgreSQL ends the session of a relay idle in its claim's transaction for HOLD_ROWS_SECONDS, so the
    rows it claimed can be claimed by whoever leads next; until then they stay locked."""
    await commit_events(pool, [queued_event(i) for i in range(3)])
    publisher = HangingPublisher()
    relay = OutboxRelay(pool, publisher, poll_seconds=60)
    relay.HOLD_ROWS_SECONDS = 1.0
    stalled = asyncio.create_task(relay.publish_pending())
    try:
        await asyncio.wait_for(publisher.called.wait(), 10)
        assert await claimable(pool) == 0  # held by the stalled relay
        deadline = time.monotonic() + 30
        while True:
            if await claimable(pool) == 3:
                break
            assert time.monotonic() < deadline, "the stalled relay's rows were never freed"
            await asyncio.sleep(0.1)
    finally:
        stalled.cancel()
        with contextlib.suppress(BaseException):
            await stalled
