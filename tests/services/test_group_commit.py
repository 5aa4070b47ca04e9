"""Group commit (stamen.service.idempotent.GroupCommit) on the real PostgreSQL: idempotent handler calls
that arrive together share one transaction, each in its own savepoint; a call that fails is rolled back
alone and fails alone; a commit that fails fails them all and leaves nothing behind; a redelivery (of
what committed) is a no-op, in a later group or in the same one; a screen reads once for a group, and
an event it says has nothing to do leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import pytest

from stamen.bus.consumer import Delivery, EventHandler
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import WorksetQueued
from stamen.service.idempotent import GroupCommit, Screen, idempotent
from stamen.store.db import Connection, create_pool
from stamen.store.unit_of_work import UnitOfWork
from tests.transactions import TransactionCounter

DELIVERY = Delivery(subject="test", stream_seq=1, num_delivered=1, headers={})
CONSUMER = "group-test"


class Boom(Exception):
    """A handler's own failure."""


@pytest.fixture
async def counted(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, TransactionCounter]]:
    counter = TransactionCounter()
    pool = await create_pool(database_url, init=counter.init)
    await pool.execute(
        """CREATE TABLE effects (event_id uuid NOT NULL, note text NOT NULL);
           CREATE TABLE parents (id int PRIMARY KEY);
           CREATE TABLE children (parent int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)"""
    )
    counter.transactions.clear()
    counter.sent.clear()
    try:
        yield pool, counter
    finally:
        await pool.close()


def event(note: str = "") -> Envelope:
    return new_envelope(WorksetQueued(), tenant_id="acme", region="r", workset_id=f"ws-{note}")


def handler_for(
    pool: asyncpg.Pool, group: GroupCommit | None, *, fail: frozenset[str] = frozenset()
) -> EventHandler:
    """An effect per event (a row); events whose workset is in `fail` (now) raise after writing theirs;
    `orphan` writes a row its commit refuses (a deferred foreign key)."""

    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        note = envelope.workset_id or ""
        await uow.connection.execute("INSERT INTO effects VALUES ($1, $2)", envelope.id, note)
        if fail and note in fail:
            raise Boom(note)
        if note == "ws-orphan":
            await uow.connection.execute("INSERT INTO children VALUES (404)")

    return idempotent(CONSUMER, lambda: pool, handle, group=group)


async def effects(pool: asyncpg.Pool) -> dict[uuid.UUID, int]:
    rows = await pool.fetch("SELECT event_id, count(*) AS n FROM effects GROUP BY event_id")
    return {r["event_id"]: r["n"] for r in rows}


async def claims(pool: asyncpg.Pool) -> set[uuid.UUID]:
    rows = await pool.fetch("SELECT event_id FROM inbox WHERE consumer = $1", CONSUMER)
    return {r["event_id"] for r in rows}


async def test_calls_that_arrive_together_share_one_transaction_and_a_failure_stays_in_its_savepoint(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    failing = {"ws-3"}
    handler = handler_for(pool, GroupCommit(lambda: pool), fail=failing)
    events = [event(str(i)) for i in range(8)]
    outcomes = await asyncio.gather(*(handler(e, DELIVERY) for e in events), return_exceptions=True)
    assert await counter.count() == 1, counter.transactions  # eight calls, one transaction (was eight)
    statements = counter.transactions[0]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 8
    assert sum(s.startswith("ROLLBACK TO") for s in statements) == 1
    failed = [i for i, o in enumerate(outcomes) if o is not None]
    assert failed == [3] and isinstance(outcomes[3], Boom)  # to its caller alone
    others = {e.id for i, e in enumerate(events) if i != 3}
    # The failed call's effect and claim are gone with its savepoint; the others' committed.
    assert await effects(pool) == dict.fromkeys(others, 1)
    assert await claims(pool) == others
    # Its redelivery succeeds (its cause gone); the others' find their claims and do nothing.
    failing.clear()
    redelivered = await asyncio.gather(*(handler(e, DELIVERY) for e in events), return_exceptions=True)
    assert redelivered == [None] * 8
    assert await effects(pool) == {e.id: 1 for e in events}


async def test_a_call_alone_is_its_own_transaction_without_a_savepoint(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    """A group of one: no SAVEPOINT and RELEASE (two of its few round trips); a failure, its own or its
    commit's, still fails it and leaves nothing, and its redelivery is handled as in a group."""
    pool, counter = counted
    failing = {"ws-alone"}
    handler = handler_for(pool, GroupCommit(lambda: pool), fail=failing)
    alone, orphan = event("alone"), event("orphan")
    with pytest.raises(Boom):
        await handler(alone, DELIVERY)
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # refused by its commit (a deferred key)
        await handler(orphan, DELIVERY)
    assert await effects(pool) == {} and await claims(pool) == set()
    failing.clear()
    await handler(alone, DELIVERY)
    await handler(alone, DELIVERY)  # a redelivery: finds the claim, does nothing
    await counter.count()
    calls = [t for t in counter.transactions if any("INTO inbox" in s for s in t)]  # not the reads above
    assert len(calls) == 4, counter.transactions
    assert not any(s.startswith(("SAVEPOINT", "RELEASE")) for t in calls for s in t), calls
    assert await effects(pool) == {alone.id: 1} and await claims(pool) == {alone.id}


async def test_a_redelivery_in_the_same_group_is_a_no_op(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    handler = handler_for(pool, GroupCommit(lambda: pool))
    once = event("twice")
    await asyncio.gather(handler(once, DELIVERY), handler(once, DELIVERY), handler(event("other"), DELIVERY))
    assert await counter.count() == 1
    assert (await effects(pool))[once.id] == 1


async def test_a_failed_commit_fails_every_call_of_the_group_and_leaves_nothing(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    handler = handler_for(pool, GroupCommit(lambda: pool))
    events = [event("a"), event("orphan"), event("b")]
    outcomes = await asyncio.gather(*(handler(e, DELIVERY) for e in events), return_exceptions=True)
    # Every call ran without an error of its own; the commit refused the group (the deferred key).
    assert all(isinstance(o, asyncpg.ForeignKeyViolationError) for o in outcomes), outcomes
    assert await counter.count() == 1
    assert await effects(pool) == {} and await claims(pool) == set()
    # Redelivered (the orphan's cause fixed), each takes effect once.
    await pool.execute("INSERT INTO parents VALUES (404)")
    await asyncio.gather(*(handler(e, DELIVERY) for e in events))
    assert await effects(pool) == {e.id: 1 for e in events}


async def test_groups_are_bounded(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    group = GroupCommit(lambda: pool, max_group=4, gather_seconds=0)
    handler = handler_for(pool, group)
    first = asyncio.gather(*(handler(event(f"f{i}"), DELIVERY) for i in range(10)))
    await asyncio.sleep(0)  # the first group has started
    later = asyncio.gather(*(handler(event(f"l{i}"), DELIVERY) for i in range(3)))
    await asyncio.gather(first, later)
    # 13 calls in groups of at most 4: 4 transactions (4 + 4 + 4 + 1, the later ones joining the rest).
    assert await counter.count() == 4, [len(t) for t in counter.transactions]
    assert len(await effects(pool)) == 13


async def test_without_a_group_each_call_is_its_own_transaction(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    """The control: what the same calls cost ungrouped (the way every consumer ran before)."""
    pool, counter = counted
    handler = handler_for(pool, None)
    await asyncio.gather(*(handler(event(str(i)), DELIVERY) for i in range(8)))
    assert await counter.count() == 8


async def test_a_full_group_does_not_wait_out_the_gathering_window(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    handler = handler_for(pool, GroupCommit(lambda: pool, max_group=4, gather_seconds=3600))
    # Four calls fill the group: it commits at once (the bound only keeps a broken runner from hanging).
    await asyncio.wait_for(asyncio.gather(*(handler(event(str(i)), DELIVERY) for i in range(4))), 60)
    assert await counter.count() == 1
    assert len(await effects(pool)) == 4


async def test_groups_take_shared_rows_in_one_order_so_two_replicas_do_not_deadlock(
    database_url: str,
) -> None:
    """Two replicas' groups whose calls lock the same rows (queue counters) in opposite arrival orders: run
    as they arrived, the groups deadlock and PostgreSQL fails a call (seen with two validators: the
    admission_queues row of a tenant's queue); run in `lock_order`, one waits for the other and all commit."""
    first = await create_pool(database_url)
    second = await create_pool(database_url)
    await first.execute("CREATE TABLE queue_counts (queue text PRIMARY KEY, n int NOT NULL DEFAULT 0)")
    await first.execute("INSERT INTO queue_counts (queue) VALUES ('lab-a'), ('lab-b')")

    def bump(queue: str) -> Callable[[UnitOfWork], Awaitable[None]]:
        async def work(uow: UnitOfWork) -> None:
            await uow.connection.execute("UPDATE queue_counts SET n = n + 1 WHERE queue = $1", queue)
            await asyncio.sleep(0.3)  # the other replica's group takes its first row meanwhile
            await uow.commit()

        return work

    async def replicas(ordered: bool) -> list[BaseException | None]:
        groups = [
            GroupCommit(lambda: first, gather_seconds=0.05),
            GroupCommit(lambda: second, gather_seconds=0.05),
        ]
        arrivals = [("lab-a", "lab-b"), ("lab-b", "lab-a")]
        calls = [
            group.run(bump(queue), lock_order=(queue,) if ordered else ())
            for group, queues in zip(groups, arrivals, strict=True)
            for queue in queues
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        unordered = await replicas(ordered=False)
        assert any(isinstance(r, asyncpg.DeadlockDetectedError) for r in unordered), unordered
        assert await replicas(ordered=True) == [None] * 4
    finally:
        await first.close()
        await second.close()


def screened_handler(pool: asyncpg.Pool, group: GroupCommit | None, screen: Screen) -> EventHandler:
    async def handle(uow: UnitOfWork, envelope: Envelope) -> None:
        await uow.connection.execute("INSERT INTO effects VALUES ($1, $2)", envelope.id, envelope.workset_id)

    return idempotent(CONSUMER, lambda: pool, handle, group=group, screen=screen)


async def test_a_screen_reads_once_per_group_and_an_event_with_nothing_to_do_leaves_nothing(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, counter = counted
    asked: list[list[str | None]] = []

    async def screen(conn: Connection, events: Sequence[Envelope]) -> list[bool]:
        asked.append([e.workset_id for e in events])
        await conn.fetchval("SELECT 'screen'")
        return [e.workset_id != "ws-quiet" for e in events]

    handler = screened_handler(pool, GroupCommit(lambda: pool), screen)
    quiet, loud, quiet_too = event("quiet"), event("loud"), event("quiet")
    await asyncio.gather(*(handler(e, DELIVERY) for e in (quiet, loud, quiet_too)))
    await counter.count()
    assert asked == [["ws-quiet", "ws-loud", "ws-quiet"]]  # once, for the whole group
    # The screen before the transaction; the one call with something to do is then a plain transaction
    # (no SAVEPOINT, no RELEASE): five round trips, where the screen inside the group's transaction and
    # the call's savepoint made seven.
    [read], [claim, effect] = counter.transactions
    assert read == "SELECT 'screen'"
    assert claim.startswith("INSERT INTO inbox") and effect.startswith("INSERT INTO effects")
    assert len(counter.sent) == 5, counter.sent
    assert await effects(pool) == {loud.id: 1}
    assert await claims(pool) == {loud.id}  # nothing kept of the others: a redelivery asks again
    # Without a group: the same, in the call's own transaction.
    alone = screened_handler(pool, None, screen)
    await alone(quiet, DELIVERY)
    assert await claims(pool) == {loud.id}
    # A group of one (its own transaction, without a savepoint) is screened too.
    await handler(quiet, DELIVERY)
    assert asked[-1] == ["ws-quiet"] and await claims(pool) == {loud.id}


async def test_a_screen_that_fails_lets_every_call_run_in_full(
    counted: tuple[asyncpg.Pool, TransactionCounter],
) -> None:
    pool, _ = counted

    async def screen(conn: Connection, events: Sequence[Envelope]) -> list[bool]:
        raise Boom("the screen")

    handler = screened_handler(pool, GroupCommit(lambda: pool), screen)
    events = [event(str(i)) for i in range(3)]
    await asyncio.gather(*(handler(e, DELIVERY) for e in events))
    await screened_handler(pool, None, screen)(extra := event("alone"), DELIVERY)
    assert await effects(pool) == {e.id: 1 for e in [*events, extra]}
    assert await claims(pool) == {e.id for e in [*events, extra]}
