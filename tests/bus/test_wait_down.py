"""`BusConnection.wait_down()`: work that exists only while NATS is away (the validator's validation from
PostgreSQL) waits for the connection to go instead of asking every second whether it has."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stamen.bus.connections import BusConnection
from stamen.stack.ports import free_port
from stamen.stack.servers import NatsServer

pytestmark = pytest.mark.slow


async def test_wait_down_returns_at_once_before_nats_answers(tmp_path: Path) -> None:
    bus = BusConnection(f"nats://127.0.0.1:{free_port()}", name="down-test", dedup_window_seconds=60)
    await bus.start(wait_seconds=0.1)  # nothing there: it goes on connecting in the background
    try:
        await asyncio.wait_for(bus.wait_down(), 1)
    finally:
        await bus.close()


async def test_wait_down_waits_while_connected_and_returns_when_nats_goes(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    bus = BusConnection(server.url, name="down-test", dedup_window_seconds=60)
    try:
        await bus.start()
        await bus.wait()
        waiting = asyncio.create_task(bus.wait_down())
        await asyncio.sleep(1.0)
        assert not waiting.done(), "NATS is up: nothing is for while it is away"

        server.stop()
        await asyncio.wait_for(waiting, 15)  # the client noticed: the bus-away work starts
        assert not bus.up

        server.start()  # same port: the client reconnects by itself
        for _ in range(300):
            if bus.up:
                break
            await asyncio.sleep(0.1)
        assert bus.up
        again = asyncio.create_task(bus.wait_down())
        await asyncio.sleep(0.5)
        assert not again.done(), "back up: waiting again"
        again.cancel()
    finally:
        await bus.close()
        server.stop()
