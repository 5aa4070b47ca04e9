"""Acks sent together (stamen.bus.acks) against a real nats-server: a consumer's acks wait out their window
and then leave, all of them; stopping the consumer sends what is held; a nak is never held."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer, EventHandler, RetryLater
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import EVENTS_STREAM, event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued


def queued(i: int) -> Envelope:
    return new_envelope(
        WorksetQueued(priority="normal"), tenant_id="acme", region="us-west-2", workset_id=f"ws-{i}"
    )


async def ack_pending(js: JetStreamContext, durable: str) -> int:
    return int((await js.consumer_info(EVENTS_STREAM, durable)).num_ack_pending)


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def started(
    js: JetStreamContext, durable: str, handler: EventHandler, *, ack_gather_seconds: float
) -> tuple[DurableConsumer, JetStreamPublisher]:
    """A consumer of `workset.queued` with that ack window, started, and a publisher."""
    spec = ConsumerSpec(
        durable, [event_filter("workset.queued")], handler, ack_gather_seconds=ack_gather_seconds
    )
    consumer = DurableConsumer(js, spec, JetStreamPublisher(js))
    await consumer.start()
    return consumer, JetStreamPublisher(js)


async def test_acks_of_handlers_ending_one_at_a_time_are_held_for_their_window_and_sent_on_stop(
    js: JetStreamContext,
) -> None:
    """Five messages handled one after the other (each in its own turn of the loop: each ack was a write of
    its own): with a window longer than the test, none is acked yet; stopping the consumer sends all five."""
    seen: list[Envelope] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env)

    consumer, publisher = await started(js, "t-held", handler, ack_gather_seconds=3600.0)
    for i in range(5):
        assert await publisher.publish(queued(i)) is True

        async def handled(n: int = i + 1) -> bool:
            return len(seen) == n

        await until(handled)
    assert await ack_pending(js, "t-held") == 5  # handled, their acks held
    await consumer.stop(5)

    async def none_pending() -> bool:
        return await ack_pending(js, "t-held") == 0

    await until(none_pending)  # JetStream applies acks in its own time: a moment, not the window
    info = await js.consumer_info(EVENTS_STREAM, "t-held")
    assert info.num_pending == 0 and info.num_redelivered == 0


async def test_held_acks_leave_when_their_window_ends_and_a_nak_at_once(js: JetStreamContext) -> None:
    seen: list[Envelope] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env)
        if env.workset_id == "ws-later" and d.num_delivered == 1:
            raise RetryLater(0.2, "not yet")

    consumer, publisher = await started(js, "t-window", handler, ack_gather_seconds=0.05)
    for i in range(3):
        assert await publisher.publish(queued(i)) is True
    later = new_envelope(
        WorksetQueued(priority="normal"), tenant_id="acme", region="us-west-2", workset_id="ws-later"
    )
    assert await publisher.publish(later) is True

    async def all_acked() -> bool:
        return len(seen) == 5 and await ack_pending(js, "t-window") == 0

    await until(all_acked)  # the three, and the nak'd one redelivered (nak'd at once) and acked
    assert [e.workset_id for e in seen].count("ws-later") == 2
    await consumer.stop(5)
