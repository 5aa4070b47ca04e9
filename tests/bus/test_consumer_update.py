"""A durable consumer whose filter the code changes: the next start (`DurableConsumer.start`, whose
`add_consumer` creates the durable or updates it) edits the existing durable in place. It keeps its
position: what it had acked is not delivered again, and what is published after the change that the new
filter takes is delivered. What was published before the change under a subject the old filter left out
may have been passed over already (docs/architecture.md, "Durable consumers")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from stamen.bus.connections import BusConnection
from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import EVENTS_STREAM, event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import EventPayload, WorksetQueued, WorksetStarted
from tests.waiting import eventually

DURABLE = "t-filter-update"


async def test_a_changed_filter_is_applied_to_the_existing_durable_which_keeps_its_position(
    nats_url: str,
) -> None:
    bus = BusConnection(nats_url, name="filter-update-test", dedup_window_seconds=60)
    seen: list[str] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env.workset_id or "")

    async def publish(payload: EventPayload, workset_id: str) -> None:
        await JetStreamPublisher(bus.js).publish(
            new_envelope(payload, tenant_id="acme", region="r", workset_id=workset_id)
        )

    async def consume(*types: str) -> DurableConsumer:
        spec = ConsumerSpec(DURABLE, [event_filter(t) for t in types], handler)
        consumer = DurableConsumer(bus.js, spec, bus)
        await consumer.start()
        return consumer

    await bus.start()
    await bus.wait()
    try:
        first = await consume("workset.queued")
        await publish(WorksetQueued(), "q1")
        await eventually(_seen(seen, {"q1"}), 30, "the first message")
        await first.stop(2)
        assert await _filters(bus.js) == [event_filter("workset.queued")]

        second = await consume("workset.queued", "workset.started")
        try:
            assert await _filters(bus.js) == sorted(
                event_filter(t) for t in ("workset.queued", "workset.started")
            )
            await publish(WorksetStarted(cluster="c"), "s1")
            await publish(WorksetQueued(), "q2")
            await eventually(_seen(seen, {"q1", "s1", "q2"}), 30, "what the new filter takes")
            assert seen.count("q1") == 1  # acked under the old filter: not delivered again
        finally:
            await second.stop(2)
    finally:
        await bus.close()


async def _filters(js: JetStreamContext) -> list[str]:
    config = (await js.consumer_info(EVENTS_STREAM, DURABLE)).config
    return sorted(config.filter_subjects or [config.filter_subject or ""])


def _seen(seen: list[str], expected: set[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return set(seen) == expected

    return check
