"""Admission decisions with a deep queue: p50/p99 time of one decision with 100,000 worksets queued.

    python bench/admission.py [--queued 100000] [--clusters 50] [--tenants 200] [--history 100000]
                              [--decisions 200] [--json]

Seeds a fresh database (PostgreSQL from the wheel, or DATABASE_URL's server) with `--queued` queued
worksets of `--tenants` tenants at three priorities, `--history` finished worksets with their runs
(fair share reads when each tenant was last admitted), `--clusters` clusters in three regions and some
worksets running, then times the scheduler's own `Admitter.admit_next()` (one whole decision: lock,
queue heads, limits, placement, lease, commit):

- admitting: every decision admits one workset (the limits are wide);
- blocked: every slot is taken, so the decision reads the queue and admits nothing (what every idle
  tick of a busy scheduler pays);
- queue read: what admission reads of the queue, alone, with its plans (the queues waiting from
  `admission_queues`, then one index descent per front queue: is any queued row scanned?).

The ratio printed is the decision's p99 over one single-row PostgreSQL transaction's p50 on the same
server in the same run: how many "simplest possible transactions" one decision costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from ceiling import postgres_ceiling
from measure import bench_process, embedded_servers, emit, latency_summary, machine

from services.scheduler.admission import Admitter
from stamen.domain.admission import Limits, TenantQueue, next_queues
from stamen.settings import Settings
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations
from stamen.store.unit_of_work import UnitOfWork

REGIONS = ("us-west-2", "us-east-1", "eu-west-1")
RUNNING = 500  # worksets holding a slot when the decisions are timed


async def fresh_database(admin_url: str) -> str:
    name = f"bench_admission_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return url


async def drop_database(admin_url: str, url: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


# A spec like a real one: two paired samples in one of a few buckets, a reference, labels.
SPEC_SQL = """jsonb_build_object(
    'name', 'ws-' || g, 'pipeline', 'fastq-qc', 'reference_genome', 'GRCh38', 'priority', {priority},
    'samples', jsonb_build_array(
        jsonb_build_object('id', 'S' || g || 'a', 'platform', 'ILLUMINA',
            'r1', 's3://lab-' || (g % 7) || '/reads/S' || g || 'a_R1.fastq.gz',
            'r2', 's3://lab-' || (g % 7) || '/reads/S' || g || 'a_R2.fastq.gz'),
        jsonb_build_object('id', 'S' || g || 'b', 'platform', 'ILLUMINA',
            'r1', 's3://lab-' || (g % 7) || '/reads/S' || g || 'b_R1.fastq.gz',
            'r2', 's3://lab-' || (g % 7) || '/reads/S' || g || 'b_R2.fastq.gz')),
    'export_uri', 's3://lab-' || (g % 7) || '/results/ws-' || g || '/',
    'labels', jsonb_build_object('project', 'p' || (g % 31), 'submitted_by', 'bench'))"""
PRIORITY_SQL = "(CASE WHEN g % 20 = 0 THEN 'urgent' WHEN g % 7 = 0 THEN 'low' ELSE 'normal' END)"


async def seed(url: str, *, queued: int, history: int, clusters: int, tenants: int, decisions: int) -> None:
    # Room for the running worksets and every timed admission, whichever clusters they land on.
    capacity = 2 * RUNNING // clusters + decisions
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""INSERT INTO clusters (name, region, executor, max_concurrent, price_factor, data_locations, status)
                SELECT 'c' || lpad(g::text, 2, '0'), (ARRAY{list(REGIONS)!r})[1 + g % 3], 'slurm', $2,
                       1.0 + (g % 5) * 0.1, ARRAY['lab-' || (g % 7)], 'active'
                FROM generate_series(1, $1) g""",
            clusters,
            capacity,
        )
        # Finished worksets and their runs: fair share reads each tenant's last admission.
        await conn.execute(
            f"""INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id,
                                      created_at, updated_at, attempt, cluster, queued_at)
                SELECT 'ws-h' || g, 't' || lpad((g % $2)::text, 3, '0'), 'ws-' || g, 'completed',
                       'us-west-2', {PRIORITY_SQL}, {SPEC_SQL.format(priority=PRIORITY_SQL)},
                       gen_random_uuid(), now() - interval '2 days' + g * interval '1 second',
                       now() - interval '1 day', 1, 'c01', now() - interval '2 days'
                FROM generate_series(1, $1) g""",
            history,
            tenants,
        )
        await conn.execute(
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at,
                                         released_at, outcome)
               SELECT id, 1, tenant_id, cluster, 'bench', created_at, created_at + interval '1 minute',
                      'completed'
               FROM worksets WHERE state = 'completed'"""
        )
        await conn.execute(
            f"""INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id,
                                      created_at, updated_at, queued_at)
                SELECT 'ws-q' || g, 't' || lpad((g % $2)::text, 3, '0'), 'ws-' || g, 'queued',
                       'us-west-2', {PRIORITY_SQL}, {SPEC_SQL.format(priority=PRIORITY_SQL)},
                       gen_random_uuid(), now() - interval '1 hour' + g * interval '10 ms',
                       now() - interval '1 hour' + g * interval '10 ms',
                       now() - interval '1 hour' + g * interval '10 ms'
                FROM generate_series(1, $1) g""",
            queued,
            tenants,
        )
        # Worksets running now: each holds a slot (lease) on a cluster, as admission left them.
        await conn.execute(
            f"""WITH running AS (
                    INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id,
                                          created_at, updated_at, attempt, cluster, queued_at)
                    SELECT 'ws-r' || g, 't' || lpad((g % $2)::text, 3, '0'), 'ws-r' || g, 'running',
                           'us-west-2', 'normal', {SPEC_SQL.format(priority="'normal'")}, gen_random_uuid(),
                           now() - interval '2 hours', now(), 1, 'c' || lpad((1 + g % $3)::text, 2, '0'),
                           now() - interval '2 hours'
                    FROM generate_series(1, $1) g
                    RETURNING id, tenant_id, cluster)
                , leases AS (
                    INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder)
                    SELECT id, tenant_id, cluster, 'bench' FROM running)
                INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
                SELECT id, 1, tenant_id, cluster, 'bench', now() - interval '1 hour' FROM running""",
            RUNNING,
            tenants,
            clusters,
        )
        await conn.execute("VACUUM ANALYZE")  # settled: autovacuum has visited the backlog
    finally:
        await conn.close()


def admitter(pool: asyncpg.Pool, *, global_max: int) -> Admitter:
    settings = Settings(
        max_concurrent_worksets=global_max, default_tenant_max_concurrent=1_000_000, default_max_retries=3
    )
    return Admitter(pool, settings, "bench-admission")


async def time_decisions(admit: Admitter, n: int, *, expect_admission: bool) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        placement = await admit.admit_next()
        times.append(time.perf_counter() - t0)
        if (placement is not None) != expect_admission:
            raise RuntimeError(
                f"decision {'admitted nothing' if expect_admission else 'admitted'} unexpectedly"
            )
    return times


async def queue_read_plan(pool: asyncpg.Pool, n: int) -> tuple[list[float], dict[str, Any]]:
    """What admission reads of the queue, timed alone: the queues waiting (with the slots held, their
    tenants' last admissions and quotas), the front by fair share, and the heads of the front queues."""
    times = []
    queues: list[TenantQueue] = []
    front: list[TenantQueue] = []
    for _ in range(n):
        async with UnitOfWork(pool) as uow:
            t0 = time.perf_counter()
            waiting = await uow.slots.waiting_queues(10**9)
            queues = waiting.queues
            limits = Limits(10**9, waiting.quotas, 10**6)
            front = next_queues(queues, waiting.occupancy, limits, waiting.last_admitted)
            await uow.slots.queue_heads(front, facts=len(front) == 1)
            times.append(time.perf_counter() - t0)
    # The plans of the queries the repository runs, as PostgreSQL executes them now.
    plans = []
    async with pool.acquire() as conn:
        for sql, args in await _queue_read_sql(front):
            plans.append(json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args))[0])
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        on = node.get("Index Name") or node.get("Relation Name")
        nodes.append(node["Node Type"] + (f" ({on})" if on else ""))
        for child in node.get("Plans", []):
            walk(child)

    for plan in plans:
        walk(plan["Plan"])
    return times, {
        "queues": len(queues),
        "front": len(front),
        "execution_ms": round(sum(p["Execution Time"] for p in plans), 3),
        "plan_nodes": nodes,
        "seq_scan_of_the_queue": "Seq Scan (worksets)" in nodes,
    }


async def _queue_read_sql(front: list[TenantQueue]) -> list[tuple[str, tuple[Any, ...]]]:
    """The SQL admission's queue reads send, caught from the repository itself (not a copy that could
    drift), with their arguments."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    class Recorder:
        async def fetch(self, sql: str, *args: object) -> list[Any]:
            sent.append((sql, args))
            return []

    from stamen.store.slots import SlotLedger

    await SlotLedger(Recorder()).waiting_queues(10**9)  # type: ignore[arg-type]
    await SlotLedger(Recorder()).queue_heads(front, facts=len(front) == 1)  # type: ignore[arg-type]
    return sent


async def run(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="stamen-bench-") as folder,
        embedded_servers(Path(folder), nats=False) as servers,
    ):
        url = await fresh_database(servers.database_url)
        try:
            t0 = time.perf_counter()
            await seed(
                url,
                queued=args.queued,
                history=args.history,
                clusters=args.clusters,
                tenants=args.tenants,
                decisions=args.decisions,
            )
            seeded_seconds = time.perf_counter() - t0
            pool = await create_pool(url, max_size=4)
            try:
                admitting = await time_decisions(
                    admitter(pool, global_max=10**9), args.decisions, expect_admission=True
                )
                async with pool.acquire() as conn:
                    running = int(await conn.fetchval("SELECT count(*) FROM slot_leases"))
                blocked = await time_decisions(
                    admitter(pool, global_max=running), args.decisions, expect_admission=False
                )
                heads_times, plan = await queue_read_plan(pool, args.decisions)
            finally:
                await pool.close()
            ceiling = await postgres_ceiling(url, min(2.0, max(0.5, args.decisions / 200)), connections=2)
        finally:
            await drop_database(servers.database_url, url)
    single = ceiling["single_connection_latency"]["p50_ms"]
    figures: dict[str, Any] = {
        "bench": "admission",
        "machine": machine(),
        "queued": args.queued,
        "history": args.history,
        "clusters": args.clusters,
        "tenants": args.tenants,
        "running_when_timed": running,
        "seed_seconds": round(seeded_seconds, 1),
        "decision_admitting": latency_summary(admitting),
        "decision_blocked": latency_summary(blocked),
        "queue_read": {**latency_summary(heads_times), **plan},
        "postgres_single_tx_p50_ms": single,
        "ratio_decision_p99_to_single_tx": round(latency_summary(admitting)["p99_ms"] / single, 1),
    }
    a, b, q = figures["decision_admitting"], figures["decision_blocked"], figures["queue_read"]
    lines = [
        f"admission with {args.queued:,} queued ({args.tenants} tenants, 3 priorities), {args.clusters} clusters, "
        f"{running} running, {args.history:,} finished",
        f"decision that admits:      p50 {a['p50_ms']:8.2f} ms   p99 {a['p99_ms']:8.2f} ms   ({a['n']} decisions)",
        f"decision, all slots taken: p50 {b['p50_ms']:8.2f} ms   p99 {b['p99_ms']:8.2f} ms",
        f"queue read alone:          p50 {q['p50_ms']:8.2f} ms   p99 {q['p99_ms']:8.2f} ms   "
        f"({q['queues']} queues, {q['front']} in front; plans: {' > '.join(q['plan_nodes'])})",
        f"single-row tx p50 {single:.2f} ms; decision p99 / single tx = {figures['ratio_decision_p99_to_single_tx']}",
    ]
    emit(figures, lines, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=100_000, help="finished worksets (with their runs)")
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--decisions", type=int, default=200, help="timed decisions of each kind")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
