"""Outbox relay and consumer throughput on real embedded servers.

    python bench/outbox_relay.py [--events 5000]

Prints events/s for: committing state changes (submit_workset), relaying outbox rows to JetStream,
and consuming them with the idempotent (inbox) handler. Figures from one run are comparable with each
other, not across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.consumer import ConsumerSpec, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.events import Envelope
from stamen.intake import submit_workset
from stamen.relay import OutboxRelay
from stamen.service.idempotent import idempotent
from stamen.stack.servers import NatsServer, PostgresServer
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations
from stamen.store.unit_of_work import UnitOfWork


async def run(events: int, folder: Path) -> None:
    nats = NatsServer(folder / "nats").start()
    pg = PostgresServer(folder / "pg").start()
    try:
        pool = await create_pool(pg.url, max_size=20)
        async with pool.acquire() as conn:
            await apply_migrations(conn)  # type: ignore[arg-type]
        nc = await connect_nats(nats.url, name="bench")
        js = nc.jetstream()
        await ensure_streams(js, dedup_window_seconds=600)

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

        relay = OutboxRelay(pool, JetStreamPublisher(js))
        t0 = time.perf_counter()
        while await relay.publish_pending():
            pass
        t_relay = time.perf_counter() - t0

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
        t0 = time.perf_counter()
        await consumer.start()
        await asyncio.wait_for(done.wait(), timeout=600)
        t_consume = time.perf_counter() - t0
        await consumer.stop(5)
        await nc.close()
        await pool.close()
    finally:
        nats.stop()
        pg.stop()
    print(f"events: {events}")
    print(f"commit (row + history + outbox, 16 concurrent): {events / t_commit:8.0f} events/s")
    print(f"relay  (outbox -> JetStream, one relay):         {events / t_relay:8.0f} events/s")
    print(f"consume (inbox + ack, 32 concurrent):            {events / t_consume:8.0f} events/s")
    print(f"relay/commit ratio: {t_commit / t_relay:.2f}   consume/commit ratio: {t_commit / t_consume:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(run(args.events, Path(folder)))


if __name__ == "__main__":
    main()
