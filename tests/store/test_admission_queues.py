"""Admission's reads of the queue give what a plain reading of the queue gives: the (tenant, priority)
queues with a workset queued (`admission_queues`, kept by triggers), when each of their tenants was last
admitted (`tenant_admissions`), and the oldest queued workset of each queue with its input buckets;
after bulk inserts, state and priority changes, deletions and truncation, and with writers racing."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from stamen.domain.admission import Occupancy, TenantQueue
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations, packaged_migrations
from stamen.store.unit_of_work import UnitOfWork

T0 = datetime(2030, 1, 1, tzinfo=UTC)
# Samples as specs carry them, with what admission must make of them: only s3:// r1/r2 strings count.
SAMPLES: list[Any] = [
    [{"id": "a", "r1": "s3://lab-1/x_R1.fastq.gz", "r2": "s3://lab-1/x_R2.fastq.gz"}],
    [{"id": "a", "r1": "s3://lab-2/x.fq"}, {"id": "b", "r1": "s3://lab-1/y.fq", "r2": "s3://Lab-0/z"}],
    [{"id": "a", "r1": "/local/x.fq", "r2": 7}, "not a sample"],
    [{"id": "a", "r1": "s3://", "r2": "s3://only-bucket"}],
    "samples that are not a list",
    None,
]


def expected_buckets(spec: dict[str, Any]) -> tuple[str, ...]:
    buckets = set()
    samples = spec.get("samples")
    for sample in samples if isinstance(samples, list) else []:
        if isinstance(sample, dict):
            for key in ("r1", "r2"):
                uri = sample.get(key)
                if isinstance(uri, str) and uri.startswith("s3://"):
                    buckets.add(uri[5:].split("/", 1)[0])
    return tuple(sorted(buckets))


async def plain_reading(conn: asyncpg.Connection) -> tuple[set[tuple[str, str]], dict[str, datetime]]:
    queues = await conn.fetch("SELECT DISTINCT tenant_id, priority FROM worksets WHERE state = 'queued'")
    runs = await conn.fetch("SELECT tenant_id, max(admitted_at) AS at FROM workset_runs GROUP BY tenant_id")
    queued_tenants = {r["tenant_id"] for r in queues}
    return (
        {(r["tenant_id"], r["priority"]) for r in queues},
        {r["tenant_id"]: r["at"] for r in runs if r["tenant_id"] in queued_tenants},
    )


async def assert_admission_reads_match(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        want_queues, want_last = await plain_reading(conn)
        counts = await conn.fetch("SELECT tenant_id, priority, queued FROM admission_queues")
        want_counts = await conn.fetch(
            "SELECT tenant_id, priority, count(*) AS queued FROM worksets WHERE state = 'queued' GROUP BY 1, 2"
        )
    assert sorted(map(tuple, counts)) == sorted(map(tuple, want_counts))
    async with UnitOfWork(pool) as uow:
        waiting = await uow.slots.waiting_queues(10**6)
        running = await uow.slots.running_by_tenant()
    queues = waiting.queues
    assert {(q.tenant_id, q.priority) for q in queues} == want_queues and len(queues) == len(want_queues)
    assert waiting.last_admitted == want_last
    assert waiting.occupancy.total == sum(running.values())
    assert waiting.occupancy.by_tenant == {
        t: n for t, n in running.items() if t in {q.tenant_id for q in queues}
    }


async def test_queue_reads_match_a_plain_reading_of_the_queue(pool: asyncpg.Pool) -> None:
    rng = random.Random(18)
    rows = []
    for i in range(400):
        spec: dict[str, Any] = {"name": f"w{i}"}
        if (samples := rng.choice(SAMPLES)) is not None:
            spec["samples"] = samples
        if rng.random() < 0.2:
            spec["preferred_cluster"] = rng.choice(["east", "west"])
        rows.append((
            f"ws-{i:04d}", f"t{rng.randrange(12):02d}", rng.choice(["urgent", "normal", "low"]),
            rng.choice(["queued"] * 4 + ["running", "completed"]),
            T0 + timedelta(seconds=rng.randrange(50)),  # ties on queued_at: the id decides
            spec,
        ))  # fmt: skip
    async with pool.acquire() as conn:
        await conn.executemany(  # one statement per row
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               VALUES ($1, $2, $1, $4, 'us-west-2', $3, $6::jsonb, $7, $5)""",
            [(*r[:5], json.dumps(r[5]), uuid.uuid4()) for r in rows[:200]],
        )
        await conn.execute(  # one statement for many rows
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               SELECT r.id, r.tenant_id, r.id, r.state, 'us-west-2', r.priority, r.spec, gen_random_uuid(), r.queued_at
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::jsonb[])
                    AS r (id, tenant_id, priority, state, queued_at, spec)""",
            *([r[k] for r in rows[200:]] for k in range(5)),
            [json.dumps(r[5]) for r in rows[200:]],
        )
        # Admissions in the past of half the tenants, several each: in one statement, then one at a time.
        runs = [(r[0], r[1], T0 - timedelta(minutes=rng.randrange(600))) for r in rows if r[1] < "t06"]
        await conn.execute(
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               SELECT w, 1, t, 'c', 'h', at FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r (w, t, at)""",
            *([r[k] for r in runs[::2]] for k in range(3)),
        )
        await conn.executemany(
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               VALUES ($1, 2, $2, 'c', 'h', $3)""",
            runs[1::2],
        )
        await conn.execute(  # the running hold slots
            "INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder) "
            "SELECT id, tenant_id, 'c', 'h' FROM worksets WHERE state = 'running'"
        )
    await assert_admission_reads_match(pool)

    queued = sorted((r for r in rows if r[3] == "queued"), key=lambda r: (r[1], r[2], r[4], r[0]))
    heads: dict[tuple[str, str], tuple[Any, ...]] = {}
    for r in queued:
        heads.setdefault((r[1], r[2]), r)
    async with UnitOfWork(pool) as uow:
        queues = (await uow.slots.waiting_queues(10**6)).queues
        got = sorted(await uow.slots.queue_heads(queues, facts=True), key=lambda h: (h.tenant_id, h.priority))
        bare = sorted(
            await uow.slots.queue_heads(queues, facts=False), key=lambda h: (h.tenant_id, h.priority)
        )
        assert [(h.tenant_id, h.priority, h.workset_id) for h in got] == [
            (k[0], k[1], r[0]) for k, r in sorted(heads.items())
        ]
        assert [(h.workset_id, h.queued_at) for h in bare] == [(h.workset_id, h.queued_at) for h in got]
        assert all(h.data_locations == () and h.preferred_cluster is None for h in bare)
        assert [await uow.slots.head_facts(h) for h in bare] == got
    for head in got:
        spec = heads[(head.tenant_id, head.priority)][5]
        assert head.data_locations == expected_buckets(spec), spec
        assert head.preferred_cluster == spec.get("preferred_cluster")
        assert head.queued_at == heads[(head.tenant_id, head.priority)][4]

    # Worksets leave and enter queues every way a writer can move them; the counts follow each.
    async with pool.acquire() as conn:
        for i in range(300):
            ws = rng.choice(rows)[0]
            change = rng.randrange(4)
            if change == 0:
                await conn.execute("UPDATE worksets SET state = $2 WHERE id = $1", ws, rng.choice(
                    ["queued", "queued", "scheduled", "running", "failed", "cancelled"]))  # fmt: skip
            elif change == 1:
                await conn.execute(
                    "UPDATE worksets SET priority = $2 WHERE id = $1",
                    ws,
                    rng.choice(["urgent", "normal", "low"]),
                )
            elif change == 2:
                await conn.execute(  # a bulk update: many rows, some in, some out of the queue
                    "UPDATE worksets SET state = CASE WHEN state = 'queued' THEN 'scheduled' ELSE 'queued' END "
                    "WHERE tenant_id = $1 AND priority = $2",
                    f"t{rng.randrange(12):02d}",
                    rng.choice(["urgent", "normal", "low"]),
                )
            else:
                await conn.execute("UPDATE worksets SET version = version + 1 WHERE id = $1", ws)  # no move
            if i % 50 == 0:
                await assert_admission_reads_match(pool)
        await conn.execute("DELETE FROM worksets WHERE tenant_id IN ('t01', 't02')")
    await assert_admission_reads_match(pool)
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE worksets CASCADE")
    await assert_admission_reads_match(pool)


async def test_a_queue_emptied_while_another_transaction_fills_it_stays_counted(pool: asyncpg.Pool) -> None:
    """One transaction takes the last workset of a queue (its row goes) while another queues a new one
    there: whichever commits first, the row is there afterwards with one workset."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               VALUES ('last', 't', 'last', 'queued', 'us-west-2', 'normal', '{}', gen_random_uuid(), now()),
                      ('new', 't', 'new', 'validating', 'us-west-2', 'normal', '{}', gen_random_uuid(), now())"""
        )
    for first in ("dequeue", "enqueue"):
        async with pool.acquire() as a, pool.acquire() as b:
            dequeue, enqueue = a.transaction(), b.transaction()
            await dequeue.start()
            await enqueue.start()
            take_last = "UPDATE worksets SET state = 'scheduled' WHERE id = 'last'"
            queue_new = "UPDATE worksets SET state = 'queued' WHERE id = 'new'"
            # dequeue first: the row goes (count 0, deleted); the enqueue waits, then inserts it again.
            # enqueue first: the count goes to 2; the dequeue waits, then takes it to 1.
            steps = {"dequeue": (a, take_last, dequeue), "enqueue": (b, queue_new, enqueue)}
            second = "enqueue" if first == "dequeue" else "dequeue"
            (conn_1, sql_1, tx_1), (conn_2, sql_2, tx_2) = steps[first], steps[second]
            await conn_1.execute(sql_1)
            waiting = asyncio.ensure_future(conn_2.execute(sql_2))
            await asyncio.sleep(0.2)
            assert not waiting.done(), f"the {second} waits for the queue's row"
            await tx_1.commit()
            await waiting
            await tx_2.commit()
        await assert_admission_reads_match(pool)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT queued FROM admission_queues WHERE tenant_id = 't'") == 1
            await conn.execute(  # back to the start: 'last' queued, 'new' not
                "UPDATE worksets SET state = CASE id WHEN 'last' THEN 'queued' ELSE 'validating' END"
            )
        await assert_admission_reads_match(pool)


async def test_an_empty_queue_has_no_queues_and_no_heads(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        waiting = await uow.slots.waiting_queues(10**6)
        assert (waiting.queues, waiting.occupancy, waiting.last_admitted) == ([], Occupancy(0, {}), {})
        assert await uow.slots.queue_heads([], facts=True) == []


async def test_with_every_slot_held_the_queues_are_not_read(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               VALUES ('q', 't1', 'q', 'queued', 'us-west-2', 'normal', '{}', gen_random_uuid(), now()),
                      ('r', 't2', 'r', 'running', 'us-west-2', 'normal', '{}', gen_random_uuid(), now())"""
        )
        await conn.execute(
            "INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder) VALUES ('r', 't2', 'c', 'h')"
        )
    async with UnitOfWork(pool) as uow:
        room = await uow.slots.waiting_queues(2)
        full = await uow.slots.waiting_queues(1)
    assert room.queues == [TenantQueue("t1", "normal")] and room.occupancy == Occupancy(1, {})
    assert full.queues == [] and full.occupancy == Occupancy(1, {})


async def test_the_placement_view_is_the_clusters_and_the_regions(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.placement_view() == ([], {}, {})
        for name, region in (("b", "us-east-1"), ("a", "us-west-2")):
            await uow.connection.execute(
                "INSERT INTO clusters (name, region, executor, max_concurrent) VALUES ($1, $2, 'local', 2)",
                name,
                region,
            )
        assert await uow.slots.placement_view() == (await uow.slots.cluster_views(), {}, {})
        await uow.slots.set_region_health("us-east-1", "degraded")
        await uow.slots.set_region_health("eu-west-1", "down")
        await uow.connection.execute("UPDATE region_health SET latency_ms = 12.5 WHERE region = 'us-east-1'")
        views, health, latency = await uow.slots.placement_view()
        assert [v.name for v in views] == ["a", "b"] and views == await uow.slots.cluster_views()
        assert (health, latency) == await uow.slots.region_states()
        assert (health, latency) == ({"us-east-1": "degraded", "eu-west-1": "down"}, {"us-east-1": 12.5})
        await assert_placement_rides_with_the_queues(uow)


async def assert_placement_rides_with_the_queues(uow: UnitOfWork) -> None:
    """`waiting_queues(placement=True)` brings what `placement_view_and_clusters` reads, while a slot is free."""
    *_, records = await uow.slots.placement_view_and_clusters()
    for queued in (False, True):
        if queued:
            await uow.connection.execute(
                """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
                   SELECT 'q' || g, 't' || g, 'q', 'queued', 'us-west-2', 'normal', '{}', gen_random_uuid(), now()
                   FROM generate_series(1, 3) g"""
            )
            await uow.connection.execute(
                "INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder) VALUES ('q1', 't1', 'a', 'h')"
            )
        waiting = await uow.slots.waiting_queues(2, placement=True)
        assert waiting.placement is not None and len(waiting.queues) == (3 if queued else 0)
        assert (waiting.placement.clusters, waiting.placement.health, waiting.placement.latency) == (
            await uow.slots.placement_view()
        )
        assert waiting.placement.records == records and [v.running for v in waiting.placement.clusters] == (
            [1, 0] if queued else [0, 0]
        )
        assert (await uow.slots.waiting_queues(2)).placement is None  # not asked
    assert (await uow.slots.waiting_queues(1, placement=True)).placement is None  # every slot taken


async def test_the_migration_counts_what_was_queued_and_admitted_before_it(empty_database_url: str) -> None:
    """A deployment upgraded with worksets queued and a history: migration 0021 starts its tables from them."""
    before = [m for m in packaged_migrations() if m.version < "0021"]
    conn = await asyncpg.connect(empty_database_url)
    try:
        await apply_migrations(conn, before)
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               SELECT 'w' || g, 't' || (g % 3), 'w' || g, CASE WHEN g % 4 = 0 THEN 'running' ELSE 'queued' END,
                      'us-west-2', (ARRAY['urgent', 'normal', 'low'])[1 + g % 3], '{}', gen_random_uuid(), $1
               FROM generate_series(1, 40) g""",
            T0,
        )
        await conn.execute(
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               SELECT id, 1, tenant_id, 'c', 'h', $1::timestamptz + (substr(id, 2)::int * interval '1 minute')
               FROM worksets WHERE state = 'running'""",
            T0,
        )
        assert await apply_migrations(conn) == [
            m.version for m in packaged_migrations() if m.version >= "0021"
        ]
    finally:
        await conn.close()
    pool = await create_pool(empty_database_url, max_size=2)
    try:
        await assert_admission_reads_match(pool)
        async with UnitOfWork(pool) as uow:
            assert len((await uow.slots.waiting_queues(10**6)).last_admitted) == 3
    finally:
        await pool.close()


async def seed_queues(conn: asyncpg.Connection, *, queued: int, tenants: int) -> None:
    await conn.execute(
        """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
           SELECT 'ws-' || g, 't' || (g % $2), 'w', CASE WHEN g % 10 = 0 THEN 'completed' ELSE 'queued' END,
                  'us-west-2', (ARRAY['urgent', 'normal', 'low'])[1 + g % 3],
                  jsonb_build_object('samples', jsonb_build_array(jsonb_build_object(
                      'id', 'a', 'r1', 's3://lab-' || (g % 7) || '/x_R1.fq'))),
                  gen_random_uuid(), $3::timestamptz + g * interval '1 ms'
           FROM generate_series(1, $1) g""",
        queued,
        tenants,
        T0,
    )
    await conn.execute("ANALYZE worksets")


async def test_one_queue_s_head_is_planned_once_and_read_from_its_index(pool: asyncpg.Pool) -> None:
    """Admission asks for one queue's head per decision: the statement keeps its generic plan (planned once per
    connection, not at each decision), and that plan is one descent of worksets_queue_heads, at scale."""
    async with pool.acquire() as conn:
        await seed_queues(conn, queued=20_000, tenants=50)
        want = {
            (r["tenant_id"], r["priority"]): r["id"]
            for r in await conn.fetch(
                """SELECT DISTINCT ON (tenant_id, priority) tenant_id, priority, id FROM worksets
                   WHERE state = 'queued' ORDER BY tenant_id, priority, queued_at, id"""
            )
        }
        async with UnitOfWork.on(conn) as uow:
            queues = sorted(
                (await uow.slots.waiting_queues(10**6)).queues, key=lambda q: (q.tenant_id, q.priority)
            )
            for queue in queues[:12]:
                for facts in (True, False):
                    (head,) = await uow.slots.queue_heads([queue], facts=facts)
                    assert head.workset_id == want[(queue.tenant_id, queue.priority)]
                    assert head.data_locations == ((f"lab-{int(head.workset_id[3:]) % 7}",) if facts else ())
        plans = await conn.fetch(
            """SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements
               WHERE statement LIKE '%FROM worksets w%' AND statement LIKE '%queued_at, w.id LIMIT 1%'
                     AND statement NOT LIKE '%pg_prepared_statements%'"""
        )
        assert len(plans) == 2, plans  # with the facts and without
        for plan in plans:
            # PostgreSQL plans a statement's first five executions afresh, then keeps its generic plan if it
            # is no dearer; the array form was planned afresh every time (custom_plans 12, generic_plans 0).
            assert plan["custom_plans"] <= 5 and plan["generic_plans"] >= 7, plan
            # The plan it keeps (the generic one, forced here) at this scale.
            await conn.execute(
                f"SET plan_cache_mode = force_generic_plan; PREPARE head AS {plan['statement']}"
            )
            explained = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE head('t1', 'normal')"))
            await conn.execute("DEALLOCATE head; RESET plan_cache_mode")
            assert "using worksets_queue_heads" in explained and "Seq Scan" not in explained, explained
            assert "Sort Key: w.queued_at" not in explained, explained  # the index's order: no sort
