"""Long-poll fetches (stamen.bus.pull): a request that waits at the server must not outlive the server.
A NATS that restarts forgets the pull requests waiting in it; the consumer asks again when its client
reconnects instead of sitting out the rest of the wait while messages pile up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from stamen.bus import pull
from stamen.bus.connections import BusConnection
from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.deadletter import DeadLetterForwarder
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued
from stamen.stack.servers import NatsServer
from tests.waiting import eventually

pytestmark = pytest.mark.slow


async def test_a_consumer_asks_again_when_nats_restarted_under_its_waiting_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wait longer than the test: only a fetch made again after the restart can receive the message.
    monkeypatch.setattr(pull, "WAIT_SECONDS", 3600.0)
    server = NatsServer(tmp_path / "nats").start()
    bus = BusConnection(server.url, name="long-poll-test", dedup_window_seconds=60)
    seen: list[str] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env.workset_id or "")

    consumer: DurableConsumer | None = None
    forwarder: DeadLetterForwarder | None = None
    try:
        await bus.start()
        await bus.wait()
        spec = ConsumerSpec("t-long-poll", [event_filter("workset.queued")], handler)
        consumer = DurableConsumer(bus.js, spec, bus)
        await consumer.start()
        forwarder = DeadLetterForwarder(bus.js, bus, spec.durable)
        await forwarder.start()
        bus.on_reconnect(consumer.refetch)
        bus.on_reconnect(forwarder.refetch)
        await asyncio.sleep(0.5)  # the consumer's first fetch is waiting at the server

        server.stop()
        await eventually(_is(lambda: not bus.up), 10, "the client to notice NATS is gone")
        server.start()  # same port, same JetStream store: the durable consumer is still there
        await eventually(_is(lambda: bus.up), 30, "the client to reconnect")

        await JetStreamPublisher(bus.js).publish(
            new_envelope(WorksetQueued(), tenant_id="acme", region="r", workset_id="after-restart")
        )
        await eventually(
            _is(lambda: seen == ["after-restart"]), 30, "the message published after the restart"
        )
    finally:
        if consumer is not None:
            await consumer.stop(2)
        if forwarder is not None:
            await forwarder.stop()
        await bus.close()
        server.stop()


def _is(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
