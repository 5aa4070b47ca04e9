"""The validator's handler of workset.submitted alone, at an offered rate: what a validation costs and how
long it takes, without the rest of the stack (no relay, no JetStream, no worksets running).

    python bench/validation.py [--rate 25] [--worksets 300] [--concurrency 16] [--json]

PostgreSQL (from the wheel, in a temporary folder) and moto's S3 server; the bench's two-read worksets
(bench/lifecycle.py) are submitted with `submit_workset`, then validated by the validator service's own
wiring (`services.validator.submission.validate_handler`, its group commit with the service's window),
handler i started at t0 + i / rate (open loop), at most `--concurrency` at once as the consumer allows
(`STAMEN_VALIDATION_CONCURRENCY`). One validator takes half of `bench/intake.py`'s 50/s: hence 25.

Prints the time from a handler's start to its return (the `validating` read, the S3 checks, the decision
committed) p50/p99, the CPU of this process per validation (the handler's Python: the S3 client, sniffing,
asyncpg; not moto's nor PostgreSQL's), PostgreSQL transactions per validation, and whether all were queued.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from admission import drop_database, fresh_database
from aiohttp import web
from lifecycle import TENANTS, grant_reads, upload_reads, workset
from measure import bench_process, embedded_servers, emit, latency_summary, machine, settled_transactions

from services.validator import submission
from stamen.bus.consumer import Delivery
from stamen.events.envelope import Envelope, decode_envelope
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.objects import open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.intake import submit_workset
from stamen.service.idempotent import GATHER_SECONDS, GroupCommit
from stamen.service.keys import INBOX_GROUP, POOL
from stamen.settings import Settings
from stamen.stack.servers import MotoServer
from stamen.store.db import create_pool

# Handlers started this late (p99) mean the process could not keep up with the offered rate.
SATURATED_LATE_MS = 50.0
DELIVERY = Delivery(subject="bench", stream_seq=1, num_delivered=1, headers={})


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def submitted_events(pool: asyncpg.Pool, n: int, reads: dict[str, str]) -> list[Envelope]:
    for i in range(n):
        tenant, spec = workset(i, 0, reads)
        await submit_workset(
            pool,
            tenant_id=tenant,
            name=spec["name"],
            spec=spec,
            region="us-west-2",
            source="api",
            actor="bench",
        )
    rows = await pool.fetch("SELECT body FROM outbox WHERE subject LIKE '%.workset.submitted' ORDER BY id")
    return [decode_envelope(bytes(r["body"])) for r in rows]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with (
        tempfile.TemporaryDirectory(prefix="stamen-bench-") as folder,
        embedded_servers(Path(folder), nats=False) as servers,
    ):
        moto = MotoServer(Path(folder) / "moto").start()
        url = await fresh_database(servers.database_url)
        pool = await create_pool(url, max_size=10)
        try:
            reads = upload_reads(moto.url)
            async with pool.acquire() as conn:
                await grant_reads(conn, TENANTS)
            events = await submitted_events(pool, args.worksets + 1, reads)
            settings = Settings(aws_endpoint_url=moto.url, aws_region="us-west-2", database_url=url)
            async with open_object_store(settings, IntakeSettings(), emulator=True) as store:
                app = web.Application()
                app[POOL], app[OBJECT_STORE], app[INTAKE_SETTINGS] = pool, store, IntakeSettings()
                # The service's window where it has one of its own (services/validator/submission.py).
                gather = getattr(submission, "GATHER_SECONDS", GATHER_SECONDS)
                app[INBOX_GROUP] = GroupCommit(lambda: pool, gather_seconds=gather)
                handler = submission.validate_handler(app, settings)
                await handler(events[0], DELIVERY)  # warm: the S3 client's first call loads its model
                slots = asyncio.Semaphore(args.concurrency)
                took: list[float] = []
                late: list[float] = []

                async def one(i: int, event: Envelope) -> None:
                    at = t0 + i / args.rate
                    await asyncio.sleep(max(0.0, at - time.perf_counter()))
                    late.append(time.perf_counter() - at)
                    async with slots:  # the consumer fetches no more than it may handle at once
                        started = time.perf_counter()
                        await handler(event, DELIVERY)
                        took.append(time.perf_counter() - started)

                async with pool.acquire() as conn:
                    tx_before = await settled_transactions(conn)
                profile = cProfile.Profile(time.process_time) if args.profile else None
                cpu_before = cpu_seconds()
                t0 = time.perf_counter() + 0.1
                if profile is not None:
                    profile.enable()
                await asyncio.gather(*(one(i, e) for i, e in enumerate(events[1:])))
                if profile is not None:
                    profile.disable()
                    profile.dump_stats(args.profile)
                wall = time.perf_counter() - t0
                cpu = cpu_seconds() - cpu_before
                async with pool.acquire() as conn:
                    tx_after = await settled_transactions(conn)
                    states = dict(await conn.fetch("SELECT state, count(*) FROM worksets GROUP BY state"))
        finally:
            await pool.close()
            await drop_database(servers.database_url, url)
            moto.stop()
    n = args.worksets
    return {
        "bench": "validation",
        "machine": machine(),
        "offered_rate_per_second": args.rate,
        "worksets": n,
        "seconds": round(wall, 2),
        "handler": latency_summary(took),
        "started_late": latency_summary(late),
        "saturated": latency_summary(late)["p99_ms"] > SATURATED_LATE_MS,
        "cpu_ms_per_validation": round(1000 * cpu / n, 2),
        # the two settled_transactions reads are this bench's own
        "transactions_per_validation": round((tx_after - tx_before - 2) / n, 2),
        "states": states,
        "all_queued": states.get("queued", 0) == n + 1,
    }


def lines_for(f: dict[str, Any]) -> list[str]:
    m, h = f["machine"], f["handler"]
    lines = [
        f"(load average {m['load_average_1m']} on {m['cpus']} CPUs, commit {m['commit']})",
        f"{f['worksets']} validations offered at {f['offered_rate_per_second']}/s, done in {f['seconds']} s; "
        f"states {f['states']}",
        f"handler start -> decision committed p50 / p99: {h['p50_ms']:.1f} / {h['p99_ms']:.1f} ms "
        f"(started late p99 {f['started_late']['p99_ms']:.1f} ms)",
        f"CPU of this process per validation: {f['cpu_ms_per_validation']} ms; "
        f"PostgreSQL transactions per validation: {f['transactions_per_validation']}",
    ]
    if f["saturated"]:
        # Handlers queued for the loop: the validator's groups then gather many calls (fewer transactions
        # and less CPU per validation), so this run's CPU figure is not comparable with an unsaturated one.
        lines.append(
            f"saturated (handlers started {f['started_late']['p99_ms']:.0f} ms late at p99): compare CPU per "
            "validation only between runs that were not, e.g. at a lower --rate"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=25.0, help="validations offered per second")
    parser.add_argument("--worksets", type=int, default=300, help="how many to validate")
    parser.add_argument("--concurrency", type=int, default=16, help="at most this many at once")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the validations into FILE (its CPU figure then includes cProfile's own)",
    )
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)
    if not figures["all_queued"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
