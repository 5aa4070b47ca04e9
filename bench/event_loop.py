"""CPU per round trip on each event loop a service can run on (`STAMEN_EVENT_LOOP`): asyncio's own
selector loop against uvloop.

    python bench/event_loop.py [--round-trips 20000] [--rounds 3] [--json]

A service's Python is mostly loop machinery around small round trips to PostgreSQL and NATS. This
measures one of each, alone, on each loop in turn (alternated, `--rounds` times, so a busy machine
slows both alike): an asyncpg `SELECT $1::int` (CPU of this process per round trip, and of the
PostgreSQL backend serving it) and a JetStream publish awaited for its ack (this process and
nats-server). PostgreSQL and NATS come from their wheels unless DATABASE_URL / NATS_URL are set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import nats
import psutil
from measure import bench_process, embedded_servers, emit, machine

from stamen.service.loop import EventLoopChoice, run_on_loop

LOOPS: tuple[EventLoopChoice, ...] = ("asyncio", "uvloop")


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def postgres_round_trips(url: str, n: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        for i in range(min(n, 500)):  # warm: the prepared statement and the caches
            await conn.fetchval("SELECT $1::int", i)
        own, served, wall = time.process_time(), _cpu(backend), time.perf_counter()
        for i in range(n):
            await conn.fetchval("SELECT $1::int", i)
        return {
            "client_us": (time.process_time() - own) / n * 1e6,
            "server_us": (_cpu(backend) - served) / n * 1e6,
            "wall_us": (time.perf_counter() - wall) / n * 1e6,
        }
    finally:
        await conn.close()


async def jetstream_round_trips(url: str, server_pid: int | None, n: int) -> dict[str, float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = f"BENCH_LOOP_{time.monotonic_ns()}"
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"], max_msgs=10_000)
        subject = f"{stream.lower()}.x"
        for _ in range(min(n, 200)):
            await js.publish(subject, b"x" * 200)
        own, served, wall = time.process_time(), _cpu(server_pid) if server_pid else 0.0, time.perf_counter()
        for _ in range(n):
            await js.publish(subject, b"x" * 200)
        figures = {
            "client_us": (time.process_time() - own) / n * 1e6,
            "server_us": ((_cpu(server_pid) - served) / n * 1e6) if server_pid else float("nan"),
            "wall_us": (time.perf_counter() - wall) / n * 1e6,
        }
        await js.delete_stream(stream)
        return figures
    finally:
        await nc.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        loop: {"postgres": [], "jetstream": []} for loop in LOOPS
    }
    with tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp, embedded_servers(Path(tmp)) as servers:
        assert servers.nats_url is not None
        for _ in range(args.rounds):
            for loop in LOOPS:
                pg = run_on_loop(postgres_round_trips(servers.database_url, args.round_trips), loop)
                js = run_on_loop(
                    jetstream_round_trips(servers.nats_url, servers.pids.get("nats"), args.round_trips // 4),
                    loop,
                )
                samples[loop]["postgres"].append(pg)
                samples[loop]["jetstream"].append(js)
    medians = {
        loop: {
            kind: {key: round(statistics.median(s[key] for s in runs), 1) for key in runs[0]}
            for kind, runs in kinds.items()
        }
        for loop, kinds in samples.items()
    }
    return {
        "bench": "event_loop",
        "machine": machine(),
        "round_trips": args.round_trips,
        "rounds": args.rounds,
        "medians": medians,
        "samples": samples,
    }


def lines_for(f: dict[str, Any]) -> list[str]:
    m = f["machine"]
    out = [
        f"round trips on each event loop, median of {f['rounds']} alternated rounds "
        f"(load average {m['load_average_1m']} on {m['cpus']} CPUs, commit {m['commit']})",
        f"{'':28s} {'this process':>14s} {'server':>10s} {'wall':>10s}   (us per round trip)",
    ]
    for kind, label in (("postgres", "asyncpg SELECT $1"), ("jetstream", "JetStream publish + ack")):
        for loop in LOOPS:
            s = f["medians"][loop][kind]
            out.append(
                f"  {label + ', ' + loop:26s} {s['client_us']:14.1f} {s['server_us']:10.1f} {s['wall_us']:10.1f}"
            )
        a, u = f["medians"]["asyncio"][kind]["client_us"], f["medians"]["uvloop"][kind]["client_us"]
        out.append(f"  {'':26s} uvloop / asyncio, this process: {u / a:.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=20_000,
        help="PostgreSQL round trips per round (a quarter as many publishes)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = run(args)
    emit(figures, lines_for(figures), args.json)


if __name__ == "__main__":
    main()
