"""Poison never blocks a stream (real nats-server): a message its handler finds unusable is parked in the
dead-letter stream on its first delivery, and one whose handler keeps failing is retried on its own
schedule while the messages behind it are handled at once."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import DLQ_STREAM, dlq_subject, event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued
from stamen.service.poison import workset_id_of


async def wait_for(predicate, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def queued(workset_id: str | None) -> Envelope:
    return new_envelope(WorksetQueued(), tenant_id="acme", region="us-west-2", workset_id=workset_id)


async def test_an_unusable_payload_is_parked_on_its_first_delivery_with_the_reason(
    js: JetStreamContext,
) -> None:
    deliveries: list[tuple[str | None, int]] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        deliveries.append((env.workset_id, d.num_delivered))
        workset_id_of(env)  # what every workset consumer does first

    pub = JetStreamPublisher(js)
    consumer = DurableConsumer(js, ConsumerSpec("t-poison", [event_filter("workset.queued")], handler), pub)
    await consumer.start()
    poison, good = queued(None), queued("ws-good")
    await pub.publish(poison)
    await pub.publish(good)
    await wait_for(lambda: ("ws-good", 1) in deliveries)
    sub = await js.pull_subscribe(dlq_subject("undecodable", "t-poison"), stream=DLQ_STREAM)
    [parked] = await sub.fetch(1, timeout=5)
    assert parked.headers is not None
    assert parked.headers["Stamen-Dlq-Reason"] == "malformed"
    assert "has no workset_id" in parked.headers["Stamen-Dlq-Error"]
    assert parked.data == poison.to_json()
    await asyncio.sleep(1.5)  # past the first error delay: it must not come back
    assert deliveries.count((None, 1)) == 1 and all(n == 1 for _, n in deliveries)
    await consumer.stop(5)


async def test_a_failing_message_does_not_hold_back_the_ones_behind_it(js: JetStreamContext) -> None:
    handled: dict[str, float] = {}
    failures: list[int] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        if env.workset_id == "ws-bad":
            failures.append(d.num_delivered)
            raise RuntimeError("this one always fails")
        handled[env.workset_id or ""] = time.monotonic()

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec(
        "t-hol", [event_filter("workset.queued")], handler, concurrency=1, error_delays=(30.0,)
    )
    consumer = DurableConsumer(js, spec, pub)
    await consumer.start()
    started = time.monotonic()
    await pub.publish(queued("ws-bad"))
    for i in range(20):
        await pub.publish(queued(f"ws-{i}"))
    waited = await wait_for(lambda: len(handled) == 20, timeout=10)
    # With one handler slot, the 20 behind the failing one went through long before its 30 s redelivery.
    assert failures == [1] and waited < 10
    print(f"\n20 messages behind a failing one handled in {max(handled.values()) - started:.2f}s")
    await consumer.stop(5)
