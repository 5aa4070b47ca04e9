"""The embedded stack at rest, then intake at a fixed offered rate: how long a submission takes to be
validated and queued when clients keep arriving, and what the stack spends doing nothing.

    python bench/intake.py [--idle-seconds 30] [--rate 50] [--seconds 10] [--slots 10] [--idle-only] [--json]

`stamen up --no-demo` starts everything in a temporary folder (as bench/lifecycle.py does: three no-op
steps, the API's per-principal rate limit lifted). Then:

1. **Idle**: once every service is ready and has been left alone for a few seconds, the CPU of every
   process (services, PostgreSQL, NATS; not the S3 emulator) over `--idle-seconds`, as a share of one
   core, and their wake-ups a second (threads going to sleep and being woken: what the code decides; the
   share of a core is that times what one wake-up costs, which depends on the machine and the hour).
   Nothing is submitted, so this is what the stack costs while no one uses it. `--idle-only` stops here.
2. **Intake at an offered rate**: `--rate` submissions a second for `--seconds` over the HTTP API,
   open loop (each sent at its own moment, whether or not earlier ones have been answered, as
   independent clients would), with the reads in the S3 emulator so the validator's S3 checks run.
   It waits until every workset has left `submitted`/`validating` and prints, from `workset_history`
   (PostgreSQL's clock): submitted -> queued p50/p99, the time in `validating`, how many worksets were
   seen `validating` (a history row for it), the API's answer time and how late the client fell
   behind its schedule (if it did, the offered rate was not offered). The legs, from the same clocks:
   submitted -> `validating` (the API's announcement or the relay, JetStream, the validator's fetch and its
   group's wait), `validating` -> `queued` (the S3 checks and
   both commits' waits). And the CPU of every process (not the emulator) from the first submission until
   the last workset was past intake: its share of one core and milliseconds per workset (worksets already
   queued start running meanwhile: the schedulers' share is mostly theirs).
3. **The emulator alone**: the ranged GET the validator makes per input (`ObjectStore.read_start`, the
   adapter's own code), one at a time and two at once (a workset's R1 and R2), against the stack's moto
   with nothing else asking: how much of `validating` is the emulator itself. moto answers every request
   with `Connection: close`, so each GET also opens a TCP connection (real S3 keeps them).

Worksets go on to run (10 slots) while the bench reads the figures; it does not wait for them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from lifecycle import TENANTS, Stack, grant_reads, upload_reads, workset
from measure import ProcessMeter, bench_process, emit, latency_summary, machine

from stamen.inputs.objects import open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings

PAST_INTAKE = "state NOT IN ('submitted', 'validating')"
# Services have finished starting (consumers created, first passes run) by then; idle is measured after.
SETTLE_SECONDS = 5.0


async def measure_idle(stack: Stack, seconds: float) -> dict[str, Any]:
    await asyncio.sleep(SETTLE_SECONDS)
    meter = ProcessMeter({k: v for k, v in stack.pids().items() if k != "moto"})
    meter.start()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    report = meter.report()
    share = {name: round(100 * v["cpu_seconds"] / elapsed, 2) for name, v in report.items()}
    wakeups = {name: round(v["wakeups"] / elapsed, 1) for name, v in report.items()}
    cpu, woken = sum(v["cpu_seconds"] for v in report.values()), sum(v["wakeups"] for v in report.values())
    return {
        "seconds": round(elapsed, 1),
        "percent_of_one_core": share,
        "total_percent_of_one_core": round(sum(share.values()), 2),
        # The share of a core is wake-ups a second (the code's) times what a wake-up costs (the machine's,
        # which moves between sittings): both are given.
        "wakeups_per_second": wakeups,
        "total_wakeups_per_second": round(sum(wakeups.values()), 1),
        "cpu_us_per_wakeup": round(1e6 * cpu / woken, 1) if woken else None,
    }


def cpu_during(meter: ProcessMeter, seconds: float, worksets: int) -> dict[str, Any]:
    """What each process spent from the first submission until the last workset was past intake (the
    worksets already queued start running meanwhile: the schedulers' share is theirs)."""
    report = meter.report(per=worksets)
    share = {name: round(100 * v["cpu_seconds"] / seconds, 1) for name, v in report.items()}
    return {
        "seconds": round(seconds, 1),
        "percent_of_one_core": share,
        "total_percent_of_one_core": round(sum(share.values()), 1),
        "ms_per_workset": {name: v["cpu_ms_per_unit"] for name, v in report.items()},
    }


async def offer(portal: str, worksets: list[tuple[str, dict[str, Any]]], rate: float) -> dict[str, Any]:
    """Send submission i at t0 + i / rate; record the answer time and how late it was sent."""
    answers: list[float] = []
    lateness: list[float] = []
    refused: dict[int, int] = {}

    async def one(session: aiohttp.ClientSession, at: float, tenant: str, spec: dict[str, Any]) -> None:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        lateness.append(sent - at)
        async with session.post(
            f"{portal}/api/v1/worksets", json=spec, headers={"X-Stamen-Tenant": tenant}
        ) as r:
            await r.read()
            if r.status not in (200, 201):
                refused[r.status] = refused.get(r.status, 0) + 1
        answers.append(time.perf_counter() - sent)

    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter() + 0.2
        await asyncio.gather(
            *(one(session, t0 + i / rate, tenant, spec) for i, (tenant, spec) in enumerate(worksets))
        )
        span = time.perf_counter() - t0
    return {
        "sent": len(worksets),
        "refused": refused,
        "seconds": round(span, 2),
        "answer": latency_summary(answers),
        "sent_late": latency_summary(lateness),
    }


async def wait_past_intake(conn: asyncpg.Connection, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        past = int(await conn.fetchval(f"SELECT count(*) FROM worksets WHERE {PAST_INTAKE}"))
        if past >= n or time.monotonic() > deadline:
            return past
        await asyncio.sleep(0.25)


async def intake_latencies(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        """SELECT h.workset_id,
                  min(h.at) FILTER (WHERE h.to_state = 'submitted') AS submitted,
                  min(h.at) FILTER (WHERE h.to_state = 'validating') AS validating,
                  min(h.at) FILTER (WHERE h.to_state = 'queued') AS queued
           FROM workset_history h
           GROUP BY h.workset_id"""
    )

    def between(start: str, end: str) -> list[float]:
        return [(r[end] - r[start]).total_seconds() for r in rows if r[start] and r[end]]

    return {
        "submitted_to_queued": latency_summary(between("submitted", "queued")),
        "validating_to_queued": latency_summary(between("validating", "queued")),
        "legs": {
            "submitted_to_validating": latency_summary(between("submitted", "validating")),
            "validating_to_queued": latency_summary(between("validating", "queued")),
        },
        "seen_validating": sum(1 for r in rows if r["validating"] is not None),
        "worksets": len(rows),
    }


async def emulator_alone(endpoint: str, reads: dict[str, str], n: int = 100) -> dict[str, Any]:
    """The validator's ranged GET of an input, straight at the emulator: one at a time, then two at once."""
    settings = Settings(aws_endpoint_url=endpoint, aws_region="us-west-2")
    intake = IntakeSettings()
    uris = [reads["r1"].removeprefix("s3://").split("/", 1), reads["r2"].removeprefix("s3://").split("/", 1)]
    async with open_object_store(settings, intake, emulator=True) as store:

        async def get(i: int) -> float:
            bucket, key = uris[i % 2]
            t0 = time.perf_counter()
            await store.read_start(bucket, key, intake.sniff_bytes)
            return time.perf_counter() - t0

        for i in range(10):  # warm: the client's first calls load its service model
            await get(i)
        alone = [await get(i) for i in range(n)]
        pairs = [t for i in range(n // 2) for t in await asyncio.gather(get(0), get(1))]
    return {"one_at_a_time": latency_summary(alone), "two_at_once": latency_summary(pairs)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp:
        stack = Stack(Path(tmp), args.slots)
        try:
            stack.start()
            await stack.wait_ready()
            idle = await measure_idle(stack, args.idle_seconds)
            if args.idle_only:
                return {"bench": "intake", "machine": machine(), "idle": idle}
            reads = upload_reads(stack.doc["aws_endpoint_url"])
            n = max(1, round(args.rate * args.seconds))
            worksets = [workset(i, 0, reads) for i in range(n)]
            emulator = await emulator_alone(stack.doc["aws_endpoint_url"], reads)
            conn = await asyncpg.connect(stack.database_url)
            try:
                await grant_reads(conn, TENANTS)
                meter = ProcessMeter({k: v for k, v in stack.pids().items() if k != "moto"})
                meter.start()
                t0 = time.perf_counter()
                offered = await offer(stack.service_url("portal"), worksets, args.rate)
                past = await wait_past_intake(conn, n, args.timeout)
                busy = cpu_during(meter, time.perf_counter() - t0, n)
                latencies = await intake_latencies(conn)
            finally:
                await conn.close()
        finally:
            stack.stop()
    return {
        "bench": "intake",
        "machine": machine(),
        "idle": idle,
        "offered_rate_per_second": args.rate,
        "offered": offered,
        "emulator_ranged_get": emulator,
        "cpu_during_intake": busy,
        "past_intake": past,
        "all_past_intake": past >= n,
        **latencies,
    }


def lines_for(f: dict[str, Any]) -> list[str]:
    idle, m = f["idle"], f["machine"]
    lines = [
        f"(load average {m['load_average_1m']} on {m['cpus']} CPUs, commit {m['commit']})",
        f"idle stack over {idle['seconds']} s: {idle['total_percent_of_one_core']}% of one core in all; "
        + ", ".join(f"{k} {v}%" for k, v in idle["percent_of_one_core"].items()),
        f"idle wake-ups a second: {idle['total_wakeups_per_second']} in all, {idle['cpu_us_per_wakeup']} us of CPU "
        "each on this machine now; " + ", ".join(f"{k} {v}" for k, v in idle["wakeups_per_second"].items()),
    ]
    if "offered" not in f:
        return lines  # --idle-only
    o, s2q, v2q = f["offered"], f["submitted_to_queued"], f["validating_to_queued"]
    g1, g2 = f["emulator_ranged_get"]["one_at_a_time"], f["emulator_ranged_get"]["two_at_once"]
    busy = f["cpu_during_intake"]
    return [
        *lines,
        f"offered {f['offered_rate_per_second']}/s: {o['sent']} sent in {o['seconds']} s, refused {o['refused'] or 'none'}; "
        f"sent late p99 {o['sent_late']['p99_ms']:.1f} ms",
        f"API answer p50 / p99:          {o['answer']['p50_ms']:8.1f} / {o['answer']['p99_ms']:8.1f} ms",
        f"submitted -> queued p50 / p99: {s2q['p50_ms']:8.1f} / {s2q['p99_ms']:8.1f} ms "
        f"({f['past_intake']} of {o['sent']} past intake)",
        f"validating -> queued p50 / p99:{v2q['p50_ms']:8.1f} / {v2q['p99_ms']:8.1f} ms; "
        f"seen validating: {f['seen_validating']} of {f['worksets']}",
        "legs p50 / p99: "
        + "; ".join(
            f"{name.replace('_to_', ' -> ')} {leg['p50_ms']:.1f} / {leg['p99_ms']:.1f} ms"
            for name, leg in f["legs"].items()
        ),
        f"the emulator alone, the validator's ranged GET p50 / p99: one at a time {g1['p50_ms']:.1f} / "
        f"{g1['p99_ms']:.1f} ms, two at once {g2['p50_ms']:.1f} / {g2['p99_ms']:.1f} ms",
        f"CPU from the first submission until all were past intake ({busy['seconds']} s): "
        f"{busy['total_percent_of_one_core']}% of one core; ms per workset: "
        + ", ".join(f"{k} {v:.2f}" for k, v in busy["ms_per_workset"].items()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="how long to measure the idle stack")
    parser.add_argument("--rate", type=float, default=50.0, help="submissions offered per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to offer them")
    parser.add_argument("--slots", type=int, default=10, help="worksets at once once queued")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up waiting for intake after this long"
    )
    parser.add_argument("--idle-only", action="store_true", help="measure the idle stack only, offer nothing")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)
    if not figures.get("all_past_intake", True):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
