"""The machine's ceilings for what stamen does per workset: JetStream publish+ack/s and PostgreSQL
single-row transactions/s, measured on the same machine in the same run as the figures they bound.

    python bench/ceiling.py [--seconds 5] [--json]

Starts PostgreSQL and NATS from their wheels (or uses DATABASE_URL / NATS_URL). `bench/lifecycle.py`
runs the same measurement against the stack it benchmarks, so its ratio to the ceiling is from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from measure import ProcessMeter, bench_process, embedded_servers, emit, latency_summary, machine
from nats.js.api import StorageType, StreamConfig

from stamen.bus.connections import connect_nats

CEILING_DATABASE = "bench_ceiling"
CEILING_STREAM = "BENCH_CEILING"
EVENT_BYTES = 512  # about one lifecycle event envelope
PG_CONNECTIONS = 8
JS_IN_FLIGHT = 64


async def _ceiling_database(database_url: str) -> tuple[str, bool]:
    """A database of its own, so the benchmarked database's transaction counters stay clean; the
    same database when we may not create one. Returns (url, created)."""
    conn = await asyncpg.connect(database_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", CEILING_DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{CEILING_DATABASE}"')
    except asyncpg.InsufficientPrivilegeError:
        return database_url, False
    finally:
        await conn.close()
    base, _, query = database_url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{CEILING_DATABASE}" + (f"?{query}" if query else ""), True


async def _drop_ceiling_database(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{CEILING_DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


async def postgres_ceiling(
    database_url: str, seconds: float, *, connections: int = PG_CONNECTIONS, postgres_pid: int | None = None
) -> dict[str, Any]:
    """Single-row INSERT transactions (autocommit, like a small state change) from `connections`
    connections for `seconds`; and one connection's latency for the same transaction."""
    url, created = await _ceiling_database(database_url)
    pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_ceiling_rows (id BIGSERIAL PRIMARY KEY, v TEXT)"
            )
        payload = "x" * 200
        latencies: list[float] = []
        single_deadline = time.perf_counter() + min(1.0, seconds / 4)
        async with pool.acquire() as conn:
            while time.perf_counter() < single_deadline:
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO bench_ceiling_rows (v) VALUES ($1)", payload)
                latencies.append(time.perf_counter() - t0)
        meter = ProcessMeter({"postgres": postgres_pid}) if postgres_pid else None
        if meter:
            meter.start()
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            async with pool.acquire() as conn:
                while time.perf_counter() < deadline:
                    await conn.execute("INSERT INTO bench_ceiling_rows (v) VALUES ($1)", payload)
                    count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
        figures: dict[str, Any] = {
            "tx_per_second": round(count / elapsed, 1),
            "connections": connections,
            "transactions": count,
            "single_connection_latency": latency_summary(latencies),
        }
        if meter:
            cpu = meter.report(per=count)["postgres"]
            figures["postgres_cpu_ms_per_tx"] = round(cpu["cpu_ms_per_unit"], 4)
        return figures
    finally:
        await pool.close()
        if created:
            await _drop_ceiling_database(database_url)
        else:
            with contextlib.suppress(Exception):
                conn = await asyncpg.connect(url)
                await conn.execute("DROP TABLE IF EXISTS bench_ceiling_rows")
                await conn.close()


async def jetstream_ceiling(
    nats_url: str, seconds: float, *, in_flight: int = JS_IN_FLIGHT
) -> dict[str, Any]:
    """Publishes of event-sized messages to a file-backed stream, each awaited until JetStream acked it
    (as the outbox relay does), `in_flight` at a time, for `seconds`."""
    nc = await connect_nats(nats_url, name="bench-ceiling")
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_stream(CEILING_STREAM)
    await js.add_stream(
        StreamConfig(name=CEILING_STREAM, subjects=["bench.ceiling.>"], storage=StorageType.FILE)
    )
    try:
        payload = b"x" * EVENT_BYTES
        count = 0
        deadline = time.perf_counter() + seconds

        async def publisher(i: int) -> None:
            nonlocal count
            n = 0
            while time.perf_counter() < deadline:
                await js.publish(f"bench.ceiling.{i}", payload, headers={"Nats-Msg-Id": f"{i}-{n}"})
                n += 1
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(publisher(i) for i in range(in_flight)))
        elapsed = time.perf_counter() - t0
        return {
            "publish_ack_per_second": round(count / elapsed, 1),
            "in_flight": in_flight,
            "messages": count,
        }
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(CEILING_STREAM)
        await nc.close()


async def measure_ceiling(
    nats_url: str | None, database_url: str, seconds: float, postgres_pid: int | None = None
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "postgres": await postgres_ceiling(database_url, seconds, postgres_pid=postgres_pid)
    }
    if nats_url:
        figures["jetstream"] = await jetstream_ceiling(nats_url, seconds)
    return figures


def ceiling_lines(figures: dict[str, Any]) -> list[str]:
    pg = figures["postgres"]
    lines = [
        f"PostgreSQL single-row tx/s ({pg['connections']} connections): {pg['tx_per_second']:10.0f}",
        f"PostgreSQL one-connection tx latency p50/p99:     {pg['single_connection_latency']['p50_ms']:.2f} / "
        f"{pg['single_connection_latency']['p99_ms']:.2f} ms",
    ]
    if "postgres_cpu_ms_per_tx" in pg:
        lines.append(
            f"PostgreSQL CPU per tx:                            {pg['postgres_cpu_ms_per_tx']:.3f} ms"
        )
    if "jetstream" in figures:
        js = figures["jetstream"]
        lines.append(
            f"JetStream publish+ack/s ({js['in_flight']} in flight):   {js['publish_ack_per_second']:10.0f}"
        )
    return lines


async def run(seconds: float, as_json: bool) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="stamen-bench-") as folder,
        embedded_servers(Path(folder)) as servers,
    ):
        figures = await measure_ceiling(
            servers.nats_url, servers.database_url, seconds, servers.pids.get("postgres")
        )
    figures = {"bench": "ceiling", "machine": machine(), "seconds": seconds, **figures}
    emit(figures, ceiling_lines(figures), as_json)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    asyncio.run(run(args.seconds, args.json))


if __name__ == "__main__":
    main()
