"""Outbox relay and consumer costs on real embedded servers.

    python bench/outbox_relay.py [--events 5000] [--pass-size 7] [--json]

Commits `--events` events (submit_workset, 16 at once), then relays them in passes of `--pass-size`
rows (the lifecycle bench's leader carries ~7 events per pass: 12.7 per workset, 1.85 passes per
workset), then consumes them with the idempotent (inbox) handler. For the relay and the consumer it
prints events/s and the cost per event: CPU of this process (the relay, or the consumer), of
PostgreSQL (all its backends) and of NATS, and PostgreSQL transactions and statements (round trips,
counted by asyncpg's query logger) per event. Figures from one run are comparable with each other, not
across machines; CPU per event is the figure that carries best.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from measure import ProcessTree, bench_process, emit, machine, settled_transactions

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.consumer import ConsumerSpec, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.events import Envelope
from stamen.intake import submit_workset
from stamen.relay import RELAY_LEADER_LOCK, OutboxRelay
from stamen.service.idempotent import idempotent
from stamen.stack.servers import NatsServer, PostgresServer
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations
from stamen.store.unit_of_work import UnitOfWork

ROUND_TRIPS = [0]  # queries sent by this process's pool (asyncpg's query logger: one per query)


async def count_queries(conn: asyncpg.Connection) -> None:
    def counted(_: object) -> None:
        ROUND_TRIPS[0] += 1

    conn.add_query_logger(counted)


class Cost:
    """CPU of this process, PostgreSQL and NATS, transactions and round trips over one phase."""

    def __init__(self, pg_pid: int, nats_pid: int, stats: asyncpg.Connection) -> None:
        self._trees = {"postgres": ProcessTree("postgres", pg_pid), "nats": ProcessTree("nats", nats_pid)}
        self._stats = stats

    async def start(self) -> None:
        self._tx = await settled_transactions(self._stats, wait=1.5)
        for tree in self._trees.values():
            tree.start()
        self._round_trips = ROUND_TRIPS[0]
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    async def stop(self, events: int) -> dict[str, float]:
        own = time.process_time() - self._cpu
        wall = time.perf_counter() - self._wall
        round_trips = ROUND_TRIPS[0] - self._round_trips
        trees = {name: tree.cpu_since_start() for name, tree in self._trees.items()}
        tx = await settled_transactions(self._stats, wait=1.5) - self._tx - 1  # less the settling query
        return {
            "events_per_second": round(events / wall, 1),
            "own_cpu_us_per_event": round(own * 1e6 / events, 1),
            "postgres_cpu_us_per_event": round(trees["postgres"] * 1e6 / events, 1),
            "nats_cpu_us_per_event": round(trees["nats"] * 1e6 / events, 1),
            "transactions_per_event": round(tx / events, 3),
            "round_trips_per_event": round(round_trips / events, 3),
        }


async def run(events: int, pass_size: int, folder: Path) -> dict[str, Any]:
    nats = NatsServer(folder / "nats").start()
    pg = PostgresServer(folder / "pg").start()
    try:
        assert nats.proc is not None and pg.proc is not None
        pool = await create_pool(pg.url, max_size=20, init=count_queries)
        stats = await asyncpg.connect(pg.url)
        async with pool.acquire() as conn:
            await apply_migrations(conn)  # type: ignore[arg-type]
        nc = await connect_nats(nats.url, name="bench")
        js = nc.jetstream()
        await ensure_streams(js, dedup_window_seconds=600)
        cost = Cost(pg.proc.pid, nats.proc.pid, stats)

        t0 = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await submit_workset(
                    pool,
                    tenant_id=f"t{i % 10}",
                    name=f"w{i}",
                    spec={"i": i},
                    region="us-west-2",
                    source="bench",
                    actor="bench",
                )

        await asyncio.gather(*(one(i) for i in range(events)))
        t_commit = time.perf_counter() - t0

        # The leader, as every service runs it; its passes are driven here one after the other.
        relay = OutboxRelay(pool, JetStreamPublisher(js), batch_size=pass_size, leader_lock=RELAY_LEADER_LOCK)
        await cost.start()
        relayed = 0
        while sent := await relay.publish_pending():
            relayed += sent
        relay_cost = await cost.stop(relayed)

        done = asyncio.Event()
        count = 0

        async def handle(uow: UnitOfWork, env: Envelope) -> None:
            nonlocal count
            count += 1
            if count == events:
                done.set()

        consumer = DurableConsumer(
            js,
            ConsumerSpec(
                "bench", ["stamen.evt.>"], idempotent("bench", lambda: pool, handle), concurrency=32
            ),
            JetStreamPublisher(js),
        )
        await cost.start()
        await consumer.start()
        await asyncio.wait_for(done.wait(), timeout=600)
        await consumer.stop(5)
        consume_cost = await cost.stop(events)
        await nc.close()
        await stats.close()
        await pool.close()
    finally:
        nats.stop()
        pg.stop()
    return {
        "bench": "outbox_relay",
        "machine": machine(),
        "events": events,
        "pass_size": pass_size,
        "commit_events_per_second": round(events / t_commit, 1),
        "relay": relay_cost,
        "consume": consume_cost,
    }


def text(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        f"{figures['events']} events, relay passes of {figures['pass_size']} "
        f"(load average {m['load_average_1m']} on {m['cpus']} CPUs, commit {m['commit']})",
        f"commit (row + history + outbox, 16 concurrent): {figures['commit_events_per_second']:8.0f} events/s",
        "per event:           events/s  own CPU us  PostgreSQL CPU us  NATS CPU us  transactions  round trips",
    ]
    for phase, label in (("relay", "relay (one leader)"), ("consume", "consume (inbox, 32)")):
        f = figures[phase]
        lines.append(
            f"{label:20s} {f['events_per_second']:8.0f}  {f['own_cpu_us_per_event']:10.1f}  "
            f"{f['postgres_cpu_us_per_event']:17.1f}  {f['nats_cpu_us_per_event']:11.1f}  "
            f"{f['transactions_per_event']:12.3f}  {f['round_trips_per_event']:11.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--pass-size", type=int, default=7, help="rows per relay pass")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    with tempfile.TemporaryDirectory() as folder:
        figures = asyncio.run(run(args.events, args.pass_size, Path(folder)))
    emit(figures, [text(figures)], args.json)


if __name__ == "__main__":
    main()
