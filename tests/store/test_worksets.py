"""Optimistic concurrency and history on the real store."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from stamen.domain.lifecycle import WorksetState
from stamen.intake import submit_workset
from stamen.store.errors import ConcurrencyConflict
from stamen.store.slots import SlotLedger
from stamen.store.unit_of_work import UnitOfWork
from stamen.store.worksets import SavedWith, WorksetRepository


async def submitted(pool: asyncpg.Pool, key: str | None = None) -> str:
    result = await submit_workset(
        pool,
        tenant_id="acme",
        name="w",
        spec={"a": 1},
        region="us-west-2",
        source="cli",
        actor="test",
        idempotency_key=key,
    )
    return result.workset_id


async def test_two_writers_one_wins_other_conflicts(pool: asyncpg.Pool) -> None:
    ws_id = await submitted(pool)
    async with UnitOfWork(pool) as a, UnitOfWork(pool) as b:
        wa = await a.worksets.get(ws_id)
        wb = await b.worksets.get(ws_id)
        wa.transition(WorksetState.VALIDATING, actor="writer-a")
        wb.transition(WorksetState.CANCELLED, actor="writer-b")
        await a.worksets.save(wa)
        await a.commit()
        with pytest.raises(ConcurrencyConflict):
            await b.worksets.save(wb)
    async with UnitOfWork(pool) as uow:
        final = await uow.worksets.get(ws_id)
        history = await uow.worksets.history(ws_id)
    assert final.state is WorksetState.VALIDATING and final.version == 2
    assert [(h.version, h.from_state, h.to_state, h.actor) for h in history] == [
        (1, None, "submitted", "test"),
        (2, "submitted", "validating", "writer-a"),
    ]


async def test_many_racing_writers_exactly_one_wins(pool: asyncpg.Pool) -> None:
    ws_id = await submitted(pool)
    barrier = asyncio.Barrier(8)

    async def writer(i: int) -> str:
        async with UnitOfWork(pool) as uow:
            ws = await uow.worksets.get(ws_id)
            ws.transition(WorksetState.CANCELLED if i % 2 else WorksetState.VALIDATING, actor=f"w{i}")
            await barrier.wait()
            try:
                await uow.worksets.save(ws)
                await uow.commit()
                return "won"
            except ConcurrencyConflict:
                return "conflict"

    outcomes = await asyncio.gather(*(writer(i) for i in range(8)))
    assert outcomes.count("won") == 1 and outcomes.count("conflict") == 7
    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(ws_id)
    # History is one unbroken chain: each step starts where the previous ended.
    assert [h.version for h in history] == [1, 2]
    assert history[1].from_state == history[0].to_state


async def test_state_change_and_its_events_commit_together_or_not_at_all(pool: asyncpg.Pool) -> None:
    ws_id = await submitted(pool)
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        ws.transition(WorksetState.CANCELLED, actor="t", event=None)
        await uow.worksets.save(ws)
        # no commit: leaving the block rolls back
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM worksets WHERE id=$1", ws_id) == "submitted"
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1  # only workset.submitted


async def test_idempotency_key_makes_one_workset_even_when_racing(pool: asyncpg.Pool) -> None:
    ids = await asyncio.gather(*(submitted(pool, key="same-key") for _ in range(6)))
    assert len(set(ids)) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM worksets") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1


async def test_relay_housekeeping_drops_only_old_inbox_claims(pool: asyncpg.Pool) -> None:
    from stamen.relay import OutboxRelay

    await submitted(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('c', gen_random_uuid(), now() - interval '40 days')"
        )
        await conn.execute("INSERT INTO inbox (consumer, event_id) VALUES ('c', gen_random_uuid())")

    class Unused:
        async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
            raise AssertionError("housekeeping publishes nothing")

    assert await OutboxRelay(pool, Unused()).purge_history() == 1
    async with pool.acquire() as conn:
        # Waiting: only the relay's pass takes it.
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 1
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1


async def test_a_saved_workset_s_events_are_written_once_in_order_with_one_notify(pool: asyncpg.Pool) -> None:
    """Events pending at a save go in with it, ones added after it at the commit, each once, in the order
    they were made; the relay is woken by the commit. A save that loses the race writes no event."""
    from stamen.events.types import StepStarted, WorksetCancelled, WorksetQueued
    from stamen.store.outbox import NOTIFY_CHANNEL

    ws_id = await submitted(pool)
    wakes: asyncio.Queue[str] = asyncio.Queue()
    listener = await pool.acquire()

    def wake(*args: Any) -> None:
        wakes.put_nowait(args[2])

    await listener.add_listener(NOTIFY_CHANNEL, wake)
    try:
        async with UnitOfWork(pool) as uow, UnitOfWork(pool) as loser:
            ws = await uow.worksets.get(ws_id)
            late = await loser.worksets.get(ws_id)
            ws.transition(WorksetState.VALIDATING, actor="t", event=WorksetQueued())  # any event will do
            first = ws.event(StepStarted(step="a", attempt=1))
            await uow.worksets.save(ws)
            after = ws.event(StepStarted(step="b", attempt=1))
            await uow.worksets.save(ws)  # no transition: the pending event goes in with this save
            last = ws.event(StepStarted(step="c", attempt=1))  # after the last save: written by the commit
            await uow.commit()
            late.transition(WorksetState.CANCELLED, actor="t", event=WorksetCancelled(cancelled_by="t"))
            with pytest.raises(ConcurrencyConflict):
                await loser.worksets.save(late)
        await asyncio.wait_for(wakes.get(), 10)
    finally:
        await listener.remove_listener(NOTIFY_CHANNEL, wake)
        await pool.release(listener)
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id, subject FROM outbox ORDER BY id")
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 5, rows  # workset.submitted, queued, and the three steps
    assert ids[2:] == [first.id, after.id, last.id]
    assert "workset.queued" in rows[1]["subject"] and not any("cancelled" in r["subject"] for r in rows)


async def test_what_a_save_writes_with_it_is_written_only_when_the_save_goes_through(
    pool: asyncpg.Pool,
) -> None:
    """`SavedWith`: a lease written by the workset's save (admission's), and the save's returned row; a save
    that conflicts writes neither, even outside a transaction (one statement)."""
    ws_id = await submitted(pool)
    lease = SlotLedger.leasing(workset_id=ws_id, tenant_id="acme", cluster="local", holder="h", attempt=1)
    probe = SavedWith("probe AS (SELECT 42 AS answer WHERE EXISTS (SELECT 1 FROM updated))", returns="probe")
    async with pool.acquire() as conn:
        stale = await WorksetRepository(conn, []).get(ws_id)
        fresh = await WorksetRepository(conn, []).get(ws_id)
        fresh.transition(WorksetState.VALIDATING, actor="a")
        row = await WorksetRepository(conn, []).save(fresh, probe)
        assert row is not None and row["answer"] == 42
        stale.transition(WorksetState.CANCELLED, actor="b")
        with pytest.raises(ConcurrencyConflict):
            await WorksetRepository(conn, []).save(stale, lease)
        assert await conn.fetchval("SELECT count(*) FROM slot_leases WHERE workset_id = $1", ws_id) == 0
        assert await conn.fetchval("SELECT count(*) FROM workset_runs WHERE workset_id = $1", ws_id) == 0
        fresh.transition(WorksetState.CANCELLED, actor="c")
        assert await WorksetRepository(conn, []).save(fresh, lease) is None
        assert await conn.fetchval("SELECT count(*) FROM slot_leases WHERE workset_id = $1", ws_id) == 1
        assert await conn.fetchval("SELECT count(*) FROM workset_runs WHERE workset_id = $1", ws_id) == 1


class SentStatements:
    """The statements a connection sends (asyncpg's query logger)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.sent: list[str] = []
        conn.add_query_logger(lambda record: self.sent.append(record.query))

    def saves(self) -> list[str]:
        return [q for q in self.sent if "UPDATE worksets SET" in q]


async def test_a_save_writes_only_the_columns_that_changed_and_sees_changes_made_in_place(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await submitted(pool)
    async with pool.acquire() as conn:
        sent = SentStatements(conn)
        async with UnitOfWork.on(conn) as uow:
            ws = await uow.worksets.get(ws_id, for_update=True)
            ws.transition(WorksetState.VALIDATING, actor="t")
            await uow.worksets.save(ws)  # the state only: the spec is not sent again
            ws.cancel_requested_by = "alice"
            await uow.worksets.save(ws)  # no transition: the version and the change
            ws.spec["samples"] = ["changed in place"]  # the same dict, changed: still written
            ws.transition(WorksetState.QUEUED, actor="t")
            await uow.worksets.save(ws)
            await uow.worksets.save(ws)  # nothing changed but the version
            await uow.commit()
        first, second, third, fourth = sent.saves()
        assert "state =" in first and "spec =" not in first and "cancel_requested_by" not in first
        assert "cancel_requested_by =" in second and "state =" not in second and "spec =" not in second
        assert "spec =" in third and "state =" in third and "queued_at =" in third
        assert "spec =" not in fourth and "state =" not in fourth and "queued_at" not in fourth
        row = await conn.fetchrow("SELECT * FROM worksets WHERE id = $1", ws_id)
    assert row["state"] == "queued" and row["version"] == 5 and row["cancel_requested_by"] == "alice"
    assert row["queued_at"] is not None and json.loads(row["spec"]) == {
        "a": 1,
        "samples": ["changed in place"],
    }
    async with UnitOfWork(pool) as uow:  # read again: what the store holds is what the workset says
        again = await uow.worksets.get(ws_id)
    assert (again.state, again.spec, again.cancel_requested_by) == (ws.state, ws.spec, ws.cancel_requested_by)


async def test_a_workset_the_store_did_not_read_is_saved_whole(pool: asyncpg.Pool) -> None:
    ws_id = await submitted(pool)
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
    ws.stored = None  # as a workset built elsewhere: what the store holds is unknown
    ws.transition(WorksetState.VALIDATING, actor="t")
    async with pool.acquire() as conn:
        sent = SentStatements(conn)
        async with UnitOfWork.on(conn) as uow:
            await uow.worksets.save(ws)
            await uow.commit()
    (save,) = sent.saves()
    assert all(
        f"{column} =" in save for column in ("state", "spec", "priority", "cluster", "placement_scores")
    )
