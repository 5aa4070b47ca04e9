"""Supervision of the embedded stack: restart delays that decay, distinct ports, readiness that checks
who answers, and PostgreSQL and NATS started again on their own port and data after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.subjects import EVENTS_STREAM
from stamen.stack.ports import free_ports, listening_socket
from stamen.stack.servers import NatsServer, PostgresServer
from stamen.stack.status import _readiness
from stamen.stack.supervisor import RestartPolicy, ServerWatch
from tests.waiting import eventually


def test_restart_delay_climbs_for_a_crash_loop_and_decays_with_uptime() -> None:
    crash_loop = RestartPolicy()
    delays = [crash_loop.died(uptime_seconds=0.2) for _ in range(10)]
    assert delays[0] == 0.5 and delays == sorted(delays) and delays[-1] == 30.0

    killed_every_minute = RestartPolicy()
    assert max(killed_every_minute.died(uptime_seconds=60) for _ in range(30)) < 0.6
    killed_every_10s = RestartPolicy()
    assert max(killed_every_10s.died(uptime_seconds=10) for _ in range(30)) <= 1.0

    # A crash loop that ends: once the process stays up, the next death restarts it quickly again.
    crash_loop.died(uptime_seconds=120)
    assert crash_loop.died(uptime_seconds=120) < 0.6


def test_ports_picked_together_are_distinct() -> None:
    for _ in range(300):
        ports = free_ports(6)
        assert len(set(ports)) == 6


async def test_readiness_names_a_wrong_process_on_the_port() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    app = web.Application()

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "service": "diagnostics", "pid": os.getpid()})

    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            right: dict[str, Any] = {"url": url, "service": "diagnostics", "pid": os.getpid()}
            assert await _readiness(session, right) == "ready"
            assert (await _readiness(session, {**right, "service": "portal"})).startswith("wrong process")
            assert (await _readiness(session, {**right, "pid": 1})).startswith("wrong process")
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_postgres_and_nats_are_restarted_on_their_port_and_data(tmp_path: Path) -> None:
    pg = PostgresServer(tmp_path / "pg").start()
    nats = NatsServer(tmp_path / "nats").start()
    # Runs as the user PostgreSQL runs as, so PostgreSQL may signal it and takes it for a live owner.
    squatter = subprocess.Popen(["sleep", "120"], **pg._run_as())  # type: ignore[call-overload]
    watches = [ServerWatch(pg), ServerWatch(nats)]
    for w in watches:
        w.start()
    try:
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        await conn.close()
        nc = await connect_nats(nats.url, name="test")
        await ensure_streams(nc.jetstream(), dedup_window_seconds=60)
        await nc.jetstream().publish("stamen.evt.acme.workset.queued", b"{}")

        pg_pid, pg_port, nats_pid = pg.proc.pid, pg.port, nats.proc.pid  # type: ignore[union-attr]
        watches[0].hold_down(3)  # SIGKILL, then down for 3 s
        os.kill(nats_pid, signal.SIGKILL)
        # What a zombie or a reused pid looks like to PostgreSQL: a live process that is not a postgres
        # (and not its parent, which PostgreSQL would take for a stale entry by itself).
        (pg.pgdata / "postmaster.pid").write_text(f"{squatter.pid}\n{pg.pgdata}\n")

        async def pg_back() -> bool:
            try:
                conn = await asyncpg.connect(pg.url, timeout=2)
            except (OSError, asyncpg.PostgresError):
                return False
            try:
                return await conn.fetchval("SELECT n FROM kept") == 42
            finally:
                await conn.close()

        await eventually(pg_back, 60, "PostgreSQL back on its port with its data")
        assert pg.port == pg_port and pg.proc.pid != pg_pid  # type: ignore[union-attr]
        # It checkpoints every 30 s, so the WAL it replays after a crash before it answers stays short.
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SHOW checkpoint_timeout") == "30s"
        if sys.platform == "linux":  # and makes its folder durable with one syncfs() before that replay
            assert await conn.fetchval("SHOW recovery_init_sync_method") == "syncfs"
        await conn.close()

        async def nats_back() -> bool:
            return bool(nc.is_connected) and nats.proc.pid != nats_pid  # type: ignore[union-attr]

        await eventually(nats_back, 30, "the client reconnected to the restarted NATS")
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        assert info.state.messages == 1  # JetStream's store survived

        async def counted() -> bool:  # the watch counts a restart once start() has returned, in its thread
            return [w.restarts for w in watches] == [1, 1]

        await eventually(counted, 10, "one restart counted for each server")
        assert [w.restarts for w in watches] == [1, 1]
        await nc.close()
    finally:
        for w in watches:
            w.stop()
        nats.stop()
        pg.stop()
        squatter.kill()
        squatter.wait()
