"""One relay per deployment does the work (real PostgreSQL and nats-server): relays made with the leader
lock (as every service's is) elect one through a PostgreSQL advisory lock; the others claim nothing and
LISTEN on nothing (they wait for the lock in PostgreSQL); a leader that stops, or whose session dies, is
replaced at once; the leader publishes a batch in outbox order without waiting for each ack."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher
from stamen.relay import RELAY_LEADER_LOCK, OutboxRelay
from stamen.store.db import create_pool
from tests.outbox.test_relay import (
    RecordingPublisher,
    commit_events,
    queued_event,
    stream_messages,
    wait_until_all_published,
)


class CountingRecorder(RecordingPublisher):
    """Counts publish passes too (a batch is one call)."""

    def __init__(self, inner: JetStreamPublisher) -> None:
        super().__init__(inner)
        self.batches: list[int] = []

    async def publish_many(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> list[bool | Exception]:
        outcomes = await self._inner.publish_many(messages)
        self.batches.append(len(messages))
        self.results += [
            (h["Nats-Msg-Id"], o)
            for (_, _, h), o in zip(messages, outcomes, strict=True)
            if isinstance(o, bool)
        ]
        return outcomes


async def until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_one_relay_leads_the_others_wait_and_a_stopping_leader_hands_over_at_once(
    database_url: str, pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    pools = [await create_pool(database_url, max_size=3) for _ in range(3)]
    publishers = [CountingRecorder(JetStreamPublisher(js)) for _ in pools]
    relays = [
        OutboxRelay(p, pub, poll_seconds=60, leader_lock=RELAY_LEADER_LOCK)
        for p, pub in zip(pools, publishers, strict=True)
    ]
    try:
        for relay in relays:
            await relay.start()
        await until(lambda: sum(r.leading for r in relays) == 1, 10, "no relay took the lead")
        events = [queued_event(i) for i in range(60)]
        for start in range(0, 60, 3):
            await commit_events(pool, events[start : start + 3])
        await wait_until_all_published(pool, 15, "the leader")
        leader = next(i for i, r in enumerate(relays) if r.leading)
        assert [len(p.results) for i, p in enumerate(publishers) if i != leader] == [0, 0]
        assert len(publishers[leader].results) == 60
        # Only the leader LISTENs (PostgreSQL would wake every listening session for every commit's
        # NOTIFY); the others are waiting for the lock.
        async with pool.acquire() as conn:
            activity = await conn.fetch(
                """SELECT wait_event_type, query FROM pg_stat_activity
                   WHERE datname = current_database() AND state = 'active'
                     AND query = 'SELECT pg_advisory_lock($1)'"""
            )
            listening = await conn.fetchval("SELECT count(*) FROM pg_listening_channels()")
        assert [r["wait_event_type"] for r in activity] == ["Lock", "Lock"], activity
        assert listening == 0

        started = time.monotonic()
        await relays[leader].stop()
        await until(
            lambda: sum(r.leading for r in relays) == 1, 5, "nobody took over from the stopped leader"
        )
        took_over = time.monotonic() - started
        successor = next(i for i, r in enumerate(relays) if r.leading)
        assert successor != leader
        more = [queued_event(100 + i) for i in range(10)]
        await commit_events(pool, more)
        await wait_until_all_published(pool, 10, "the successor")
        assert len(publishers[successor].results) == 10
    finally:
        for relay in relays:
            await relay.stop()
        for p in pools:
            await p.close()
    assert took_over < 5
    messages = await stream_messages(js)
    assert sorted(m for m, _ in messages) == sorted(str(e.id) for e in events + more)  # each exactly once


async def test_a_leader_whose_session_dies_is_replaced_at_once(
    database_url: str, pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    pools = [await create_pool(database_url, max_size=3) for _ in range(2)]
    relays = [
        OutboxRelay(p, JetStreamPublisher(js), poll_seconds=60, leader_lock=RELAY_LEADER_LOCK) for p in pools
    ]
    try:
        for relay in relays:
            await relay.start()
        await until(lambda: sum(r.leading for r in relays) == 1, 10, "no relay took the lead")
        # The leader's session ends as if its process died: PostgreSQL frees the lock with it. Advisory
        # locks are per database and pg_locks shows the whole cluster: other tests' stacks hold theirs.
        async with pool.acquire() as conn:
            ended = await conn.fetchval(
                """SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
                   WHERE l.locktype = 'advisory' AND l.granted
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                     AND (l.classid::bigint << 32 | l.objid::bigint) = $1""",
                RELAY_LEADER_LOCK,
            )
        assert ended == 1
        await commit_events(pool, [queued_event(i) for i in range(5)])
        await wait_until_all_published(pool, 10, "after the leader's session ended")
        assert sum(r.leading for r in relays) == 1
    finally:
        for relay in relays:
            await relay.stop()
        for p in pools:
            await p.close()
    assert (await js.stream_info("STAMEN_EVENTS")).state.messages == 5


async def test_a_busy_leader_publishes_in_batches_in_outbox_order(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    publisher = CountingRecorder(JetStreamPublisher(js))
    relay = OutboxRelay(
        pool, publisher, poll_seconds=60, leader_lock=RELAY_LEADER_LOCK, batch_window_seconds=0.05
    )
    events = [queued_event(i) for i in range(200)]
    await relay.start()
    try:
        for i, event in enumerate(events):  # 200 commits of one event each, as fast as they come
            await commit_events(pool, [event])
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await wait_until_all_published(pool, 15, "batched relay")
    finally:
        await relay.stop()
    assert [m for m, _ in await stream_messages(js)] == [str(e.id) for e in events]  # outbox order
    assert sum(publisher.batches) == 200
    assert len(publisher.batches) < 100, publisher.batches  # commits gathered into fewer claims
