"""The scheduler's own cost per workset, alone: its loop in this process, PostgreSQL, the local executor.

    python bench/scheduler.py [--worksets 300] [--slots 10] [--profile out.prof] [--json]

`lifecycle.py` measures the whole stack; beside the validators, the notifier, NATS and the API, and with
other work on the machine, the scheduler's share moves by a few ms per workset from run to run. This
runs only the scheduler's loop, as `services.scheduler.runtime` builds it (admission that submits the
first step, a monitor that starts the next, a loop woken by each step's exit), on `--worksets` worksets
queued straight in PostgreSQL (four tenants, every slot's worth of room), each three no-op steps
(`true`), `--slots` at once, until every one has completed. It prints, per workset:

- the scheduler's CPU: this process (its Python: admission, dispatch, the monitor, the survey, asyncpg,
  structlog at INFO into /dev/null as a service logs), of which its loop's thread (the rest is the local
  executor's work in threads: submissions and polls), and the local executor's processes apart (the fork
  server, the runners and the `true` commands);
- PostgreSQL's CPU (all its backends), its transactions and the statements the scheduler sent
  (BEGIN and COMMIT included: each is a round trip), and which statements those were (`--statements`);
- throughput (worksets/s, first admission to last completion).

`--profile FILE` writes a cProfile of the run (the loop's own Python; it slows the run).
`--statement-cpu` prints PostgreSQL's CPU per workset by statement shape and protocol message, as
`lifecycle.py --statement-cpu` does (log_statement_stats; embedded PostgreSQL only; logging costs some).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import yaml
from admission import drop_database, fresh_database
from lifecycle import start_statement_log, statement_cpu, stop_statement_log
from measure import ProcessTree, bench_process, embedded_servers, emit, machine, settled_transactions

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from stamen.logs import configure_logging
from stamen.settings import Settings
from stamen.store.db import create_pool

TENANTS = ("lab-a", "lab-b", "lab-c", "lab-d")
BUCKET = "bench-reads"
PIPELINE = {
    "name": "noop",
    "steps": [{"name": "first", "argv": ["true"]}, {"name": "second", "argv": ["true"]},
              {"name": "third", "argv": ["true"]}],
}  # fmt: skip


async def seed(url: str, n: int, slots: int, workdir: Path) -> None:
    """`n` queued worksets of the four tenants, whose reads are in a bucket each tenant was granted."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO clusters (name, region, executor, max_concurrent, config)
               VALUES ('local', 'us-west-2', 'local', $1, $2::jsonb)""",
            slots,
            f'{{"workdir_root": "{workdir}"}}',
        )
        await conn.executemany(
            "INSERT INTO bucket_grants (tenant_id, bucket, access, granted_by) VALUES ($1, $2, 'read-write', 'bench')",
            [(t, BUCKET) for t in TENANTS],
        )
        await conn.execute(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id,
                                      created_at, updated_at, queued_at, max_retries)
               SELECT 'ws-' || lpad(g::text, 6, '0'), ($2::text[])[1 + g % 4], 'noop-' || g, 'queued',
                      'us-west-2', 'normal',
                      jsonb_build_object('name', 'noop-' || g, 'pipeline', 'noop', 'reference_genome', 'GRCh38',
                          'max_retries', 2,
                          'samples', jsonb_build_array(jsonb_build_object('id', 'B1', 'platform', 'ILLUMINA',
                              'r1', 's3://' || $3 || '/reads/B1_R1.fastq.gz',
                              'r2', 's3://' || $3 || '/reads/B1_R2.fastq.gz')),
                          'export_uri', 's3://' || $3 || '/results/noop-' || g || '/'),
                      gen_random_uuid(), now(), now(), now() + g * interval '1 ms', 2
               FROM generate_series(1, $1) g""",
            n,
            list(TENANTS),
            BUCKET,
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


class StatementCounter:
    """Every statement the scheduler's pool sends (asyncpg's query logger: counted as sent, grouped when
    printed, so that counting costs the loop little)."""

    def __init__(self) -> None:
        self.sent: collections.Counter[str] = collections.Counter()

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self._logged)

    def _logged(self, record: Any) -> None:
        self.sent[record.query] += 1

    def by_text(self) -> dict[str, int]:
        grouped: collections.Counter[str] = collections.Counter()
        for query, count in self.sent.items():
            grouped[re.sub(r"\s+", " ", query).strip()[:110]] += count
        return dict(grouped)


def build_loop(pool: asyncpg.Pool, settings: Settings) -> SchedulerLoop:
    """As services.scheduler.runtime wires it (without the timers and region evacuation: no retries or
    regions in this run)."""
    holder = f"bench-scheduler:{os.getpid()}"
    registry = ExecutorRegistry(default_executor_factories(settings))
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), holder)
    loop = SchedulerLoop(
        pool,
        Admitter(pool, settings, holder, dispatcher),
        dispatcher,
        JobMonitor(pool, registry, holder, dispatcher),
        settings.scheduler_poll_seconds,
    )
    registry.on_job_exit(loop.wake)
    return loop


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp,
        embedded_servers(Path(tmp), nats=False) as servers,
    ):
        folder = Path(tmp)
        (folder / "pipelines.yaml").write_text(yaml.safe_dump({"pipelines": [PIPELINE]}))
        url = await fresh_database(servers.database_url)
        try:
            await seed(url, args.worksets, args.slots, folder / "work")
            settings = Settings(
                pipelines_file=folder / "pipelines.yaml",
                work_dir=folder / "work",
                max_concurrent_worksets=args.slots,
                default_tenant_max_concurrent=args.slots,
            )
            pg_log = folder / "pg" / "postgres.log" if "postgres" in servers.pids else None
            return await measure(args, url, settings, servers.pids.get("postgres"), pg_log)
        finally:
            await drop_database(servers.database_url, url)


async def measure(
    args: argparse.Namespace, url: str, settings: Settings, pg_pid: int | None, pg_log: Path | None
) -> dict[str, Any]:
    counter = StatementCounter()
    pool = await create_pool(url, init=counter.init)
    watch = await asyncpg.connect(url)
    try:
        loop = build_loop(pool, settings)
        postgres = ProcessTree("postgres", pg_pid) if pg_pid else None
        me = psutil.Process()
        log_offset = 0
        if args.statement_cpu and pg_log is not None:
            await start_statement_log(watch, statements=False, with_cpu=True)
            await asyncio.sleep(0.5)  # the reload reaches every backend
            log_offset = await asyncio.to_thread(lambda: pg_log.stat().st_size)
        tx_before = await settled_transactions(watch, wait=0)
        counter.sent.clear()
        if postgres:
            postgres.start()
        own_before = time.process_time()
        loop_thread_before = time.thread_time()  # this thread runs the loop; others are the executor's
        children_before = {c.pid: c for c in me.children()}
        profiler = cProfile.Profile(time.thread_time) if args.profile else None  # CPU of the loop's thread
        t0 = time.perf_counter()
        task = asyncio.create_task(loop.run())
        if profiler:
            profiler.enable()
        while True:
            await asyncio.sleep(0.25)
            done = await watch.fetchval(
                "SELECT count(*) FROM worksets WHERE state IN ('completed', 'failed')"
            )
            if done >= args.worksets or time.perf_counter() - t0 > args.timeout:
                break
        wall = time.perf_counter() - t0
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        own = time.process_time() - own_before
        loop_thread = time.thread_time() - loop_thread_before
        executor = sum(
            ProcessTree("executor", c.pid).cpu_seconds()
            for c in me.children()
            if c.pid not in children_before
        )
        pg = postgres.cpu_since_start() if postgres else float("nan")
        if args.statement_cpu and pg_log is not None:
            await stop_statement_log(watch)
        loop.stop()
        await task
        statements = counter.by_text()
        states = {
            r["state"]: r["n"]
            for r in await watch.fetch("SELECT state, count(*) AS n FROM worksets GROUP BY state")
        }
        failures = [r["reason"] for r in await watch.fetch(
            "SELECT DISTINCT reason FROM workset_history WHERE to_state = 'failed' LIMIT 3")]  # fmt: skip
        tx = await settled_transactions(watch) - tx_before - 2  # the watcher's own reads of the count
    finally:
        await watch.close()
        await pool.close()
    n = args.worksets
    sent = sum(statements.values())
    figures: dict[str, Any] = {
        "bench": "scheduler",
        "machine": machine(),
        "worksets": n,
        "slots": args.slots,
        "completed": states.get("completed", 0),
        "states": states,
        "failures": failures,
        "wall_seconds": round(wall, 2),
        "throughput_worksets_per_second": round(n / wall, 2),
        "cpu_ms_per_workset": {
            "scheduler_process": round(own * 1000 / n, 2),
            "scheduler_loop_thread": round(loop_thread * 1000 / n, 2),
            "local_executor_processes": round(executor * 1000 / n, 2),
            "postgres": round(pg * 1000 / n, 2),
        },
        "statements_per_workset": round(sent / n, 2),
        "begin_commit_per_workset": round(
            sum(c for s, c in statements.items() if re.match(r"(?i)(BEGIN|COMMIT|ROLLBACK)\b", s)) / n, 2
        ),
        "transactions_per_workset": round(tx / n, 2),
        "statements": {s: round(c / n, 2) for s, c in sorted(statements.items(), key=lambda kv: -kv[1])},
    }
    if args.statement_cpu and pg_log is not None:
        figures["statement_cpu"] = statement_cpu(pg_log, log_offset, n, pg * 1000 / n)
    return figures


def lines_for(f: dict[str, Any]) -> list[str]:
    cpu = f["cpu_ms_per_workset"]
    lines = [
        f"{f['worksets']} worksets x 3 no-op steps, {f['slots']} slots, one scheduler in this process "
        f"(load average {f['machine']['load_average_1m']} on {f['machine']['cpus']} CPUs, commit {f['machine']['commit']})",
        f"states: {f['states']}" + (f" (failed: {f['failures']})" if f["failures"] else ""),
        f"completed: {f['completed']}/{f['worksets']} in {f['wall_seconds']} s: {f['throughput_worksets_per_second']} worksets/s",
        f"CPU ms per workset: scheduler process {cpu['scheduler_process']} (its loop's thread "
        f"{cpu['scheduler_loop_thread']}, the rest the local executor's threads), local executor processes "
        f"{cpu['local_executor_processes']}, PostgreSQL {cpu['postgres']}",
        f"per workset: {f['statements_per_workset']} statements sent ({f['begin_commit_per_workset']} BEGIN/COMMIT), "
        f"{f['transactions_per_workset']} PostgreSQL transactions",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worksets", type=int, default=300)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", help="write a cProfile of the run to this file")
    parser.add_argument("--statements", action="store_true", help="print the statements sent per workset")
    parser.add_argument(
        "--statement-cpu", action="store_true", help="PostgreSQL's CPU per statement (log_statement_stats)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bench_process()
    # As a service logs (INFO, JSON lines), into nothing: the calls cost what they cost in the service.
    configure_logging("INFO", "json", stream=open(os.devnull, "w"))
    figures = asyncio.run(run(args))
    lines = lines_for(figures)
    if args.statements:
        lines += [f"  {c:6.2f}  {s}" for s, c in figures["statements"].items()]
    if "statement_cpu" in figures:
        s = figures["statement_cpu"]
        lines.append(
            f"PostgreSQL CPU ms per workset in protocol messages {s['logged_ms_per_workset']} of "
            f"{s['postgres_ms_per_workset']}: {s['by_phase_ms_per_workset']}"
        )
        lines += [
            f"  {t['ms_per_workset']:6.3f} ms ({t['calls_per_workset']:5.2f} calls: parse {t['parse']:.3f} "
            f"bind {t['bind']:.3f} execute {t['execute']:.3f} simple {t['simple']:.3f})  {t['statement']}"
            for t in s["top"]
        ]
    emit(figures, lines, args.json)


if __name__ == "__main__":
    main()
