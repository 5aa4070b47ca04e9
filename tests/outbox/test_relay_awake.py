"""An awake relay is not woken by commits (real PostgreSQL and nats-server): while the leader claims again
after every batch window it holds RELAY_AWAKE_LOCK, and a transaction that writes events then sends no
NOTIFY (a NOTIFY costs PostgreSQL ~0.1 ms per transaction, and the relay's process its handling). Falling
asleep, it waits for every writer that found it awake before its last claim, so no row waits for the poll;
asleep, a commit's NOTIFY wakes it as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from nats.js import JetStreamContext

from stamen.bus.publisher import JetStreamPublisher
from stamen.events import Envelope
from stamen.relay import RELAY_AWAKE_LOCK, RELAY_LEADER_LOCK, OutboxRelay
from stamen.store.db import create_pool
from stamen.store.outbox import NOTIFY_CHANNEL, OutboxWriter
from tests.outbox.test_relay import commit_events, queued_event, stream_messages
from tests.outbox.test_relay_leadership import until
from tests.transactions import TransactionCounter


class Notifications:
    """Every NOTIFY on the relays' channel, seen from a session of its own."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: object) -> None:
        self.count += 1


@pytest.fixture
async def notifications(database_url: str) -> AsyncIterator[Notifications]:
    seen = Notifications()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener(NOTIFY_CHANNEL, seen)
    yield seen
    await conn.close()


async def notified_after(seen: Notifications, before: int) -> int:
    await asyncio.sleep(0.3)  # a NOTIFY is delivered on commit: long enough for one to arrive
    return seen.count - before


async def test_a_commit_sends_no_notify_while_a_relay_holds_the_awake_lock(
    pool: asyncpg.Pool, database_url: str, notifications: Notifications
) -> None:
    await commit_events(pool, [queued_event(0)])
    assert await notified_after(notifications, 0) == 1  # no relay awake: the commit wakes one

    relay_session = await asyncpg.connect(database_url)
    try:
        assert await relay_session.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_AWAKE_LOCK)
        await commit_events(pool, [queued_event(1)])
        await commit_events(pool, [queued_event(2), queued_event(3)])
        assert await notified_after(notifications, 1) == 0
    finally:
        await relay_session.close()  # the relay's session ends: asleep as far as writers can tell
    await commit_events(pool, [queued_event(4)])
    assert await notified_after(notifications, 1) == 1


def leading_relay(pool: asyncpg.Pool, js: JetStreamContext) -> OutboxRelay:
    """A relay that leads (it takes the leader lock), stays awake after publishing for a short batch window,
    and is woken only by NOTIFY (its poll is a minute away)."""
    return OutboxRelay(
        pool,
        JetStreamPublisher(js),
        poll_seconds=60,
        leader_lock=RELAY_LEADER_LOCK,
        batch_window_seconds=0.05,
    )


async def test_a_relay_falling_asleep_waits_for_the_writers_that_found_it_awake(
    pool: asyncpg.Pool, js: JetStreamContext, notifications: Notifications
) -> None:
    """A writer that found the relay awake (so sent no NOTIFY) and commits after the relay's last pass
    found nothing: the relay, falling asleep, waits for it and claims its row at once, not at its poll."""
    relay = leading_relay(pool, js)
    await relay.start()
    writer = await pool.acquire()
    try:
        late = queued_event(1)
        tx, first = await writer_finding_it_awake(pool, writer, relay, late)  # no NOTIFY at its commit
        firsts = [str(e.id) for e in first]
        # The relay's next pass finds nothing committed: it falls asleep, and waits for this writer.
        await until(lambda: not relay.awake, 10, "the relay did not fall asleep")
        await asyncio.sleep(0.3)
        # Meanwhile another commit (asleep: it NOTIFYs) is published at once, not after the open writer.
        other = queued_event(2)
        await commit_events(pool, [other])
        assert [m for m, _ in await wait_for_messages(js, len(firsts) + 1)] == [*firsts, str(other.id)]

        await until(lambda: not relay.awake, 10, "the relay did not fall asleep again")
        await asyncio.sleep(0.3)
        before = notifications.count
        await tx.commit()
        published = [m for m, _ in await wait_for_messages(js, len(firsts) + 2)]
        assert published == [*firsts, str(other.id), str(late.id)]
        assert notifications.count == before  # its commit woke no one: the relay was waiting for it

        # Asleep now (its last claim found the row and published it, then one found nothing): a commit
        # wakes it with a NOTIFY, as ever.
        await until(lambda: not relay.awake, 10, "the relay did not fall asleep again")
        await asyncio.sleep(1.0)  # its last claims (nothing) and into its wait for a NOTIFY
        woken = queued_event(3)
        await commit_events(pool, [woken])
        assert [m for m, _ in await wait_for_messages(js, len(firsts) + 3)][-1] == str(woken.id)
        assert notifications.count > before
    finally:
        await pool.release(writer)
        await relay.stop()


async def writer_finding_it_awake(
    pool: asyncpg.Pool, writer: asyncpg.Connection, relay: OutboxRelay, event: Envelope
) -> tuple[Transaction, list[Envelope]]:
    """An open transaction on `writer` that wrote `event` while `relay` was awake (so its commit sends no
    NOTIFY), after the relay published the events returned (committed to wake it). The relay stays awake
    for a batch window only: on a loaded machine the write may come after it fell asleep (the trigger then
    took the awake lock shared, to NOTIFY at commit); that try is rolled back and made again."""
    woken: list[Envelope] = []
    for attempt in range(20):
        woken.append(queued_event(100 + attempt))
        await commit_events(pool, [woken[-1]])
        await until(lambda: relay.awake, 10, "the relay did not stay awake after publishing")
        tx = writer.transaction()
        await tx.start()
        await OutboxWriter(writer).add([event])
        found_asleep = await writer.fetchval(
            """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'
                 AND mode = 'ShareLock' AND ((classid::bigint << 32) | objid::bigint) = $1)""",
            RELAY_AWAKE_LOCK,
        )
        if not found_asleep:
            return tx, woken
        await tx.rollback()
    pytest.fail("every write came after the relay had fallen asleep")


async def wait_for_messages(js: JetStreamContext, n: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    """The stream's messages once it holds `n` (the poll is 60 s: only a claim of the relay's own gets
    them there in time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await js.stream_info("STAMEN_EVENTS")).state.messages < n:
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {n} messages after {timeout}s"
        await asyncio.sleep(0.02)
    return await stream_messages(js)


@contextlib.asynccontextmanager
async def falling_asleep_between_two_writers(
    relay_pool: asyncpg.Pool, pool: asyncpg.Pool, js: JetStreamContext
) -> AsyncIterator[tuple[Transaction, Transaction, int]]:
    """A leading relay falling asleep (on `relay_pool`) while a writer that found it awake (event 1) and
    one that found it asleep (event 2) stay open, and a third writer's commit (event 3) has sent its
    NOTIFY; the events that woke it are published. Yields the two open transactions, to commit, and how
    many events were published before them."""
    relay = leading_relay(relay_pool, js)
    await relay.start()
    found_awake, found_asleep = await pool.acquire(), await pool.acquire()
    try:
        # Found it awake: holds the writers' lock.
        awake_tx, woken = await writer_finding_it_awake(pool, found_awake, relay, queued_event(1))
        await until(lambda: not relay.awake, 10, "the relay did not fall asleep")
        asleep_tx = found_asleep.transaction()
        await asleep_tx.start()
        await OutboxWriter(found_asleep).add(
            [queued_event(2)]
        )  # found it asleep: holds the awake lock shared
        await commit_events(pool, [queued_event(3)])  # asleep: its commit NOTIFYs
        yield awake_tx, asleep_tx, len(woken)
    finally:
        await pool.release(found_awake)
        await pool.release(found_asleep)
        await relay.stop()


async def test_a_relay_falling_asleep_does_not_spin_on_a_notify_while_writers_stay_open(
    pool: asyncpg.Pool, database_url: str, js: JetStreamContext
) -> None:
    """Falling asleep, the relay waits for a writer that found it awake; a commit's NOTIFY arrives while
    another writer, that found it asleep, stays open (so the relay cannot be awake again). The relay takes
    the NOTIFY once and goes on waiting with its backoff: it used to leave it set, and every wait after it
    returned at once, two statements per turn, thousands a second, for as long as the writers stayed open
    (the whole stack's transactions per workset went from ~12 to 60-260 when the scheduler's transactions
    with events grew longer)."""
    counter = TransactionCounter()
    relay_pool = await create_pool(database_url, init=counter.init)
    try:
        async with falling_asleep_between_two_writers(relay_pool, pool, js) as (awake_tx, asleep_tx, woken):
            await asyncio.sleep(0.2)  # the NOTIFY delivered, the relay in its wait
            before = len(counter.sent)
            await asyncio.sleep(0.5)
            asked = len(counter.sent) - before
            assert asked <= 20, (
                f"{asked} statements in 0.5 s while waiting for two writers"
            )  # a backoff's worth
            await awake_tx.commit()
            await asleep_tx.commit()
            assert (
                len(await wait_for_messages(js, woken + 3, timeout=30)) == woken + 3
            )  # nothing is left behind
    finally:
        await relay_pool.close()


async def test_a_relay_falling_asleep_publishes_a_commit_it_is_told_of_without_waiting_for_open_writers(
    pool: asyncpg.Pool, js: JetStreamContext
) -> None:
    """Falling asleep, the relay waits for a writer that found it awake to end; meanwhile a commit's NOTIFY
    (while another writer, that found it asleep, keeps it from being awake again) is claimed at once, not
    after both writers have ended: under steady load a moment with no writer open may not come for long,
    and the events of every commit in between would wait for it."""
    async with falling_asleep_between_two_writers(pool, pool, js) as (awake_tx, asleep_tx, woken):
        # The events that woke it and event 3, both writers still open.
        assert len(await wait_for_messages(js, woken + 1, timeout=5)) == woken + 1
        await awake_tx.commit()
        await asleep_tx.commit()
        assert len(await wait_for_messages(js, woken + 3, timeout=30)) == woken + 3
