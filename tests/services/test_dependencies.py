"""Services and their dependencies: an outage never spends a message's delivery budget, a service
started before PostgreSQL waits for it (answering "starting" meanwhile), and a scheduler started while
NATS is away admits and dispatches from PostgreSQL alone, its events catching up once NATS is there."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from nats.js import JetStreamContext

from services.scheduler.tests.support import enqueue, write_pipelines
from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import DLQ_STREAM, event_filter
from stamen.events import Envelope
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetQueued
from stamen.service.dependencies import postgres_dependency
from stamen.service.idempotent import GroupCommit, idempotent
from stamen.stack.ports import free_port
from stamen.stack.servers import NatsServer, PostgresServer
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("grouped", [False, True], ids=["own-transactions", "group-commit"])
async def test_handlers_wait_out_a_postgres_outage_without_spending_deliveries(
    own_postgres: PostgresServer, js: JetStreamContext, grouped: bool
) -> None:
    pool = await create_pool(own_postgres.url, max_size=4)
    postgres = postgres_dependency(pool)
    seen: list[tuple[str, int]] = []

    async def handle(uow: UnitOfWork, event: Envelope) -> None:
        await uow.connection.execute("SELECT 1")

    # Grouped calls share transactions: a lost connection fails the whole group, each call waits.
    inner = idempotent(
        "outage-test", lambda: pool, handle, group=GroupCommit(lambda: pool) if grouped else None
    )

    async def handler(event: Envelope, delivery: Delivery) -> None:
        await inner(event, delivery)
        seen.append((event.workset_id or "", delivery.num_delivered))

    # Without the gate these settings dead-letter a failing message within a second.
    spec = ConsumerSpec("outage-test", [event_filter("workset.queued")], handler, max_deliver=2,
                        error_delays=(0.2,), ack_wait_seconds=3)  # fmt: skip
    consumer = DurableConsumer(js, spec, JetStreamPublisher(js), gate=postgres)
    await consumer.start()
    publisher = JetStreamPublisher(js)
    try:
        own_postgres.stop()
        for i in range(3):
            await publisher.publish(
                new_envelope(WorksetQueued(), tenant_id="acme", region="r", workset_id=f"w{i}")
            )
        await eventually(lambda: asyncio.sleep(0, not postgres.reachable), 10, "the gate to close")
        await asyncio.sleep(4)  # longer than ack_wait and every redelivery delay: the budget would be gone
        assert seen == []
        own_postgres.start()  # same port, same data
        await eventually(lambda: asyncio.sleep(0, len(seen) == 3), 30, "the three events handled")
        assert sorted(seen) == [("w0", 1), ("w1", 1), ("w2", 1)]  # each on its first delivery
        assert (await js.stream_info(DLQ_STREAM)).state.messages == 0
    finally:
        await consumer.stop(2)
        await postgres.close()
        await pool.close()


def service_env(database_url: str, nats_url: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "STAMEN_HTTP_PORT": str(port),
        "STAMEN_LOG_FORMAT": "json",
        "STAMEN_WORK_DIR": str(tmp_path / "work"),
        **extra,
    }


async def readiness(port: int) -> tuple[int, dict[str, Any]]:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
            return r.status, await r.json()
    except aiohttp.ClientError:
        return 0, {}


def held_port() -> socket.socket:
    """A port no server answers on (bound, not listening: connections are refused) and no other test's server
    can take while it is held (a port picked free and let go was once taken by another worker's NATS, and
    the scheduler "waiting for NATS" was ready). Close it just before starting the server on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_a_service_started_before_postgres_waits_for_it(tmp_path: Path, nats_url: str) -> None:
    pg_hold, http_port = held_port(), free_port()
    pg_port = pg_hold.getsockname()[1]
    database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/stamen"
    log = tmp_path / "validator.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.validator"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=service_env(database_url, nats_url, http_port, tmp_path))  # fmt: skip
    server = None
    try:

        async def starting() -> bool:
            status, body = await readiness(http_port)
            return status == 503 and body.get("status") == "starting" and "postgres" in body["checks"]

        await eventually(starting, 30, f"the placeholder to say it waits for postgres\n{log.read_text()}")
        assert proc.poll() is None
        pg_hold.close()
        server = PostgresServer(tmp_path / "pg", port=pg_port).start()

        async def ready() -> bool:
            return (await readiness(http_port))[0] == 200

        await eventually(
            ready, 60, f"the validator ready once PostgreSQL is there\n{log.read_text()[-3000:]}"
        )
        _, body = await readiness(http_port)
        assert body["service"] == "validator" and body["pid"] == proc.pid
    finally:
        proc.terminate()
        code = proc.wait(30)
        pg_hold.close()
        if server is not None:
            server.stop()
    assert code == 0, log.read_text()[-3000:]
    assert "service.waiting_for" in log.read_text()
    assert "Traceback" not in log.read_text()


async def test_scheduler_started_while_nats_is_away_runs_worksets_from_postgres(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool
) -> None:
    write_pipelines(tmp_path / "pipelines.yaml", [{"name": "only", "argv": ["true"]}])
    nats_hold, http_port = held_port(), free_port()
    nats_port = nats_hold.getsockname()[1]
    env = service_env(database_url, f"nats://127.0.0.1:{nats_port}", http_port, tmp_path,
                      STAMEN_PIPELINES_FILE=str(tmp_path / "pipelines.yaml"),
                      STAMEN_SCHEDULER_POLL_SECONDS="0.2")  # fmt: skip
    log = tmp_path / "scheduler.log"
    proc = subprocess.Popen([sys.executable, "-m", "services.scheduler"], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env)  # fmt: skip
    nats = None
    try:
        ws = await enqueue(pool, "acme", pipeline="test-pipe")

        async def completed() -> bool:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT state FROM worksets WHERE id = $1", ws) == "completed"

        await eventually(completed, 60, f"completion without NATS\n{log.read_text()[-3000:]}")
        status, body = await readiness(http_port)
        assert status == 503 and body["checks"]["nats"].startswith("error")
        async with pool.acquire() as conn:
            unpublished = await conn.fetchval("SELECT count(*) FROM outbox")
        assert unpublished > 0  # its events wait in the outbox

        nats_hold.close()
        nats = NatsServer(tmp_path / "nats", port=nats_port).start()

        async def caught_up() -> bool:
            async with pool.acquire() as conn:
                left = await conn.fetchval("SELECT count(*) FROM outbox")
            return left == 0 and (await readiness(http_port))[0] == 200

        await eventually(caught_up, 60, f"events published and consumers started\n{log.read_text()[-3000:]}")
    finally:
        proc.terminate()
        code = proc.wait(30)
        nats_hold.close()
        if nats is not None:
            nats.stop()
    assert code == 0, log.read_text()[-3000:]
