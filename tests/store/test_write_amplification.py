"""What a write costs PostgreSQL beyond its row: every index of the table gets an entry for every new version
of a row, unless the update is HOT (heap-only: no indexed column changed, and the page has room). A step's
end saves a workset's `version` and `updated_at` only: that save must stay HOT; and rows no query looks for
in an index have no entry in it."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from stamen.domain.lifecycle import WorksetState
from stamen.store import workset_queries
from stamen.store.recovery import RecoveryRepository
from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import workset_in

S = WorksetState
RUNNING = (S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING)
# The counts of this backend not yet flushed to pg_stat_user_tables (pg_stat_get_xact_*): flushed when a
# transaction ends, so the difference between two reads in one transaction is what it did in between.
UPDATES = """SELECT pg_stat_get_xact_tuples_updated('worksets'::regclass) AS updated,
                    pg_stat_get_xact_tuples_hot_updated('worksets'::regclass) AS hot"""
# The indexes of the idempotency key and of when a step run ended, whatever their names.
INDEX_SIZES = """SELECT indexdef, pg_relation_size(format('%I', indexname)::regclass) AS bytes FROM pg_indexes
                 WHERE (tablename = 'worksets' AND indexdef LIKE '%(tenant_id, idempotency_key)%')
                    OR (tablename = 'step_runs' AND indexdef LIKE '%(ended_at)%')"""


async def test_a_save_that_changes_only_the_version_is_a_hot_update(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool, *RUNNING, attempt=1)
    async with UnitOfWork(pool) as uow:
        conn = uow.connection
        entered = await conn.fetchval("SELECT state_entered_at FROM worksets WHERE id = $1", ws_id)
        ws = await uow.worksets.get(ws_id, for_update=True)
        before = await conn.fetchrow(UPDATES)
        await uow.worksets.save(ws)  # what a step's end that records the next step writes: the version
        saved = await conn.fetchrow(UPDATES)
        ws.transition(S.COMPLETED, actor="t")
        await uow.worksets.save(ws)
        completed = await conn.fetchrow(UPDATES)
        row = await conn.fetchrow("SELECT state_entered_at, updated_at FROM worksets WHERE id = $1", ws_id)
        await uow.commit()
    assert (saved["updated"] - before["updated"], saved["hot"] - before["hot"]) == (1, 1)
    # A state change is not HOT (the state is indexed): an entry in every index, and a new state_entered_at.
    assert (completed["updated"] - saved["updated"], completed["hot"] - saved["hot"]) == (1, 0)
    assert row["state_entered_at"] > entered and row["state_entered_at"] == row["updated_at"]


async def test_a_save_that_keeps_the_state_does_not_restart_the_reconcilers_wait(pool: asyncpg.Pool) -> None:
    ws_id = await workset_in(pool)  # submitted: waiting for the validator
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE worksets SET state_entered_at = now() - interval '2 minutes' WHERE id = $1", ws_id
        )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id, for_update=True)
        ws.cancel_requested_by = "someone"  # a change that leaves the workset waiting where it was
        await uow.worksets.save(ws)
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        stale = await RecoveryRepository(uow.connection).stale_submissions(60)
    assert [(u.workset_id, u.age_seconds >= 120) for u in stale] == [(ws_id, True)]


async def test_rows_without_an_idempotency_key_or_an_end_have_no_entry_in_those_indexes(
    pool: asyncpg.Pool,
) -> None:
    """Most worksets have no idempotency key, and a step run has no end until its last version: an entry for
    each of their row versions served no query (a NULL key never conflicts, and usage reads ended runs)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, correlation_id)
               SELECT 'ws-' || g, 'acme', 'w', 'running', 'us-west-2', gen_random_uuid() FROM generate_series(1, 500) g"""
        )
        await conn.execute(
            """INSERT INTO step_runs (workset_id, attempt, step, step_index, cluster, state)
               SELECT 'ws-' || g, 1, 'one', 0, 'local', 'running' FROM generate_series(1, 500) g"""
        )
        sizes = await conn.fetch(INDEX_SIZES)
        await conn.execute("SET enable_seqscan = off")  # whether the partial indexes can serve the reads
        plans = [
            "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
            for sql, args in (
                ("SELECT * FROM worksets WHERE tenant_id = $1 AND idempotency_key = $2", ("acme", "k")),
                (
                    "SELECT count(*) FROM step_runs s WHERE s.ended_at >= $1 AND s.ended_at < $2",
                    (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
                ),
            )
        ]
    # An empty btree is its metapage alone.
    assert {(r["indexdef"].split(" USING ")[1], r["bytes"]) for r in sizes} == {
        ("btree (tenant_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)", 8192),
        ("btree (ended_at) WHERE (ended_at IS NOT NULL)", 8192),
    }
    assert ["worksets_idempotency_key" in plans[0], "step_runs_ended_at" in plans[1]] == [True, True], plans


async def test_no_index_of_worksets_holds_what_a_steps_end_changes(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        definitions = [
            r["indexdef"]
            for r in await conn.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'worksets'")
        ]
    assert [d for d in definitions if "updated_at" in d or "version" in d] == []


async def test_a_state_change_writes_no_search_words(pool: asyncpg.Pool) -> None:
    """Every non-HOT update (a state change) gives the new version of the row an entry in every index of
    `worksets`: the search words, a GIN entry per word, are in `workset_search`, written by triggers when a
    workset is inserted or its name or spec changes, and the portal still finds worksets by them."""
    samples = {"samples": [{"id": "HG002-L1", "sample_id": "NA12878"}]}
    ws_id = await workset_in(pool, S.VALIDATING, S.QUEUED, spec=samples)
    async with pool.acquire() as conn:
        kinds = await conn.fetch(
            """SELECT a.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
               WHERE i.indrelid = 'worksets'::regclass"""
        )
        words = await conn.fetchval(
            "SELECT search_vector::text FROM workset_search WHERE workset_id = $1", ws_id
        )
    assert {r["amname"] for r in kinds} == {"btree"}
    assert words == "'hg002':2 'l1':3 'na12878':4 'w':1"
    async with UnitOfWork(pool) as uow:  # a requeue's new settings change the spec: its words follow
        ws = await uow.worksets.get(ws_id, for_update=True)
        ws.spec = {"samples": [{"id": "HG003"}]}
        await uow.worksets.save(ws)
        ws.transition(S.SCHEDULED, actor="t")  # a save that leaves the spec alone leaves the words alone
        await uow.worksets.save(ws)
        await uow.commit()
    async with pool.acquire() as conn:
        words = await conn.fetchval(
            "SELECT search_vector::text FROM workset_search WHERE workset_id = $1", ws_id
        )
    assert words == "'hg003':2 'w':1"


@pytest.mark.parametrize("narrow", [True, False], ids=["narrow", "broad"])
async def test_the_portal_finds_worksets_by_their_words_and_tenant(
    pool: asyncpg.Pool, narrow: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways a search is read (from the search index when it is narrow; a broad one reads each row's words in
    the page's order), scoped to the tenant."""
    if not narrow:
        monkeypatch.setattr(workset_queries, "NARROW_SEARCH", 0)
    mine = await workset_in(pool, S.VALIDATING, spec={"samples": [{"id": "HG002-L1"}]})
    await workset_in(pool, spec={"samples": [{"id": "HG004"}]})
    await workset_in(pool, tenant="other", spec={"samples": [{"id": "HG002-L1"}]})
    async with pool.acquire() as conn:
        queries = workset_queries.WorksetQueries(conn)
        found = await queries.page(workset_queries.WorksetFilter("acme", search="hg002-l"))
        everyone = await queries.page(workset_queries.WorksetFilter(None, search="HG002"))
        nothing = await queries.page(workset_queries.WorksetFilter("acme", search="hg005"))
    assert [w.id for w in found] == [mine]
    assert sorted(w.tenant_id for w in everyone) == ["acme", "other"]
    assert nothing == []
