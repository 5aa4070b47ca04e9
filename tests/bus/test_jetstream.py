"""The bus against a real nats-server: ack, dedup, delayed redelivery, dead letters, parking."""

from __future__ import annotations

import asyncio
import json
import time

from nats.js import JetStreamContext

from stamen.bus.connections import connect_nats
from stamen.bus.consumer import ConsumerSpec, Delivery, DurableConsumer, RetryLater
from stamen.bus.deadletter import DeadLetterForwarder
from stamen.bus.publisher import JetStreamPublisher
from stamen.bus.subjects import DLQ_STREAM, EVENTS_STREAM, dlq_subject, event_filter
from stamen.events import Envelope, new_envelope
from stamen.events.types import WorksetQueued


def queued_event(tenant: str = "acme") -> Envelope:
    return new_envelope(
        WorksetQueued(priority="urgent"), tenant_id=tenant, region="us-west-2", workset_id="ws-1"
    )


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def dlq_messages(js: JetStreamContext, subject: str, expected: int, timeout: float = 15.0) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        info = await js.stream_info(DLQ_STREAM)
        if info.state.messages >= expected:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"DLQ has {info.state.messages} messages, expected {expected}")
        await asyncio.sleep(0.1)
    sub = await js.pull_subscribe(subject, stream=DLQ_STREAM)
    msgs = await sub.fetch(expected, timeout=5)
    await sub.unsubscribe()
    return msgs


async def test_publish_consume_ack(js: JetStreamContext) -> None:
    seen: list[Envelope] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env)

    consumer = DurableConsumer(
        js, ConsumerSpec("t-ack", [event_filter("workset.queued")], handler), JetStreamPublisher(js)
    )
    await consumer.start()
    sent = queued_event()
    assert await JetStreamPublisher(js).publish(sent) is True
    await wait_for(lambda: len(seen) == 1)
    assert seen[0] == sent
    await asyncio.sleep(0.3)
    info = await js.consumer_info(EVENTS_STREAM, "t-ack")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    await consumer.stop(5)


async def test_duplicate_publish_is_delivered_once(js: JetStreamContext) -> None:
    seen: list[Envelope] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env)

    pub = JetStreamPublisher(js)
    event = queued_event()
    assert await pub.publish(event) is True
    assert await pub.publish(event) is False  # same Nats-Msg-Id: the server drops it
    consumer = DurableConsumer(js, ConsumerSpec("t-dup", [event_filter("workset.queued")], handler), pub)
    await consumer.start()
    await wait_for(lambda: len(seen) == 1)
    await asyncio.sleep(1.0)
    assert len(seen) == 1
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 1
    await consumer.stop(5)


async def test_nak_with_delay_redelivers_after_the_delay(js: JetStreamContext) -> None:
    arrivals: list[tuple[float, int]] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        arrivals.append((time.monotonic(), d.num_delivered))
        if d.num_delivered == 1:
            raise RetryLater(2.0, "not yet")

    pub = JetStreamPublisher(js)
    consumer = DurableConsumer(js, ConsumerSpec("t-nak", [event_filter("workset.queued")], handler), pub)
    await consumer.start()
    await pub.publish(queued_event())
    await wait_for(lambda: len(arrivals) == 2, timeout=10)
    (t1, n1), (t2, n2) = arrivals
    assert (n1, n2) == (1, 2)
    assert t2 - t1 >= 2.0, f"redelivered after {t2 - t1:.2f}s"
    await consumer.stop(5)


async def test_handler_that_always_fails_ends_in_dead_letter_stream(js: JetStreamContext) -> None:
    attempts: list[int] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        attempts.append(d.num_delivered)
        raise RuntimeError("boom")

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec(
        "t-dlq", [event_filter("workset.queued")], handler, max_deliver=3, error_delays=(0.2,)
    )
    consumer = DurableConsumer(js, spec, pub)
    forwarder = DeadLetterForwarder(js, pub, "t-dlq")
    await consumer.start()
    await forwarder.start()
    event = queued_event()
    await pub.publish(event)
    [dead] = await dlq_messages(js, dlq_subject("max_deliver", "t-dlq"), 1)
    assert attempts == [1, 2, 3]
    assert dead.data == event.to_json()  # payload intact, byte for byte
    assert dead.headers["Stamen-Original-Msg-Id"] == str(event.id)
    assert dead.headers["Stamen-Event-Type"] == "workset.queued"  # original headers kept
    assert dead.headers["Stamen-Dlq-Consumer"] == "t-dlq"
    assert dead.headers["Stamen-Original-Subject"] == "stamen.evt.acme.workset.queued"
    await forwarder.stop()
    await consumer.stop(5)


async def test_malformed_and_unknown_messages_are_parked_and_consumer_keeps_going(
    js: JetStreamContext,
) -> None:
    seen: list[Envelope] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        seen.append(env)

    pub = JetStreamPublisher(js)
    consumer = DurableConsumer(js, ConsumerSpec("t-park", ["stamen.evt.acme.>"], handler), pub)
    await consumer.start()
    await js.publish("stamen.evt.acme.workset.queued", b"\x00not json")
    unknown = json.loads(queued_event().to_json())
    unknown["type"] = "workset.teleported"
    await js.publish("stamen.evt.acme.workset.teleported", json.dumps(unknown).encode())
    missing_field = json.loads(queued_event().to_json())
    del missing_field["tenant_id"]
    await js.publish("stamen.evt.acme.workset.queued", json.dumps(missing_field).encode())
    good = queued_event()
    await pub.publish(good)
    await wait_for(lambda: len(seen) == 1)
    parked = await dlq_messages(js, dlq_subject("undecodable", "t-park"), 3)
    reasons = sorted(m.headers["Stamen-Dlq-Reason"] for m in parked)
    assert reasons == ["malformed", "malformed", "unknown_type"]
    assert any("tenant_id" in m.headers["Stamen-Dlq-Error"] for m in parked)
    assert seen == [good]
    await consumer.stop(5)


async def test_concurrency_is_bounded(js: JetStreamContext) -> None:
    running = 0
    peak = 0
    done = 0

    async def handler(env: Envelope, d: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done += 1

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec("t-conc", [event_filter("workset.queued")], handler, concurrency=3)
    consumer = DurableConsumer(js, spec, pub)
    for _ in range(30):
        await pub.publish(queued_event())
    await consumer.start()
    await wait_for(lambda: done == 30, timeout=20)
    assert peak == 3
    await consumer.stop(5)


async def test_long_handler_keeps_its_message_with_in_progress(js: JetStreamContext) -> None:
    deliveries: list[int] = []

    async def handler(env: Envelope, d: Delivery) -> None:
        deliveries.append(d.num_delivered)
        await asyncio.sleep(3.5)  # longer than ack_wait: only the heartbeats keep it ours

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec("t-wip", [event_filter("workset.queued")], handler, ack_wait_seconds=1.5)
    consumer = DurableConsumer(js, spec, pub)
    await consumer.start()
    await pub.publish(queued_event())
    await wait_for(lambda: len(deliveries) == 1)
    await asyncio.sleep(4.5)
    assert deliveries == [1]
    await consumer.stop(5)


def heartbeat_tasks() -> int:
    return sum(t.get_coro().__qualname__ == "DurableConsumer._heartbeat" for t in asyncio.all_tasks())  # type: ignore[union-attr]


async def test_one_heartbeat_task_serves_every_message_in_hand_and_ends_when_none_is(
    js: JetStreamContext,
) -> None:
    """A task and a timer per message cost more than handling a quick one: the consumer has one heartbeat
    task while it handles any message, none when it handles nothing."""
    release = asyncio.Event()
    started = 0

    async def handler(env: Envelope, d: Delivery) -> None:
        nonlocal started
        started += 1
        await release.wait()

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec(
        "t-beats", [event_filter("workset.queued")], handler, concurrency=5, ack_wait_seconds=1.5
    )
    consumer = DurableConsumer(js, spec, pub)
    await consumer.start()
    for _ in range(5):
        await pub.publish(queued_event())
    await wait_for(lambda: started == 5)
    assert heartbeat_tasks() == 1
    release.set()
    await wait_for(lambda: heartbeat_tasks() == 0, timeout=5)  # its next tick (0.25 s) finds nothing
    await consumer.stop(5)


async def test_messages_arriving_one_by_one_cost_their_delivery_and_ack_not_a_request_each(
    js: JetStreamContext, nats_url: str
) -> None:
    """A pull request left open at the server serves several messages as they are published: the
    consumer's connection sends their acks and a request per few of them (a fetch per arrival sent a
    request for each, and the server answered each with a closing status besides)."""
    handled = 0

    async def handler(env: Envelope, d: Delivery) -> None:
        nonlocal handled
        handled += 1

    own = await connect_nats(nats_url, name="t-requests")
    try:
        spec = ConsumerSpec("t-requests", [event_filter("workset.queued")], handler, concurrency=8)
        consumer = DurableConsumer(own.jetstream(), spec, JetStreamPublisher(js))
        await consumer.start()
        await asyncio.sleep(0.2)  # its first request is waiting at the server
        sent, received = own.stats["out_msgs"], own.stats["in_msgs"]
        pub = JetStreamPublisher(js)
        for i in range(1, 13):
            await pub.publish(queued_event())
            await wait_for(lambda n=i: handled == n)  # type: ignore[misc]
        await asyncio.sleep(0.2)  # the last ack is sent
        sent, received = own.stats["out_msgs"] - sent, own.stats["in_msgs"] - received
        await consumer.stop(5)
    finally:
        await own.close()
    assert received == 12, received  # the messages, and no status
    assert 12 <= sent <= 12 + 4, sent  # their acks, and a request per four (8 slots, asked when 4 free)


async def test_stop_finishes_short_handlers_and_returns_long_ones(js: JetStreamContext) -> None:
    finished: list[str] = []
    started = asyncio.Event()

    async def handler(env: Envelope, d: Delivery) -> None:
        started.set()
        await asyncio.sleep(float(env.workset_id or 0))
        finished.append(env.workset_id or "")

    pub = JetStreamPublisher(js)
    spec = ConsumerSpec("t-drain", [event_filter("workset.queued")], handler, concurrency=2)
    short = new_envelope(WorksetQueued(), tenant_id="acme", region="r", workset_id="0.5")
    long = new_envelope(WorksetQueued(), tenant_id="acme", region="r", workset_id="30")
    await pub.publish(short)
    await pub.publish(long)
    first = DurableConsumer(js, spec, pub)
    await first.start()
    await started.wait()
    await asyncio.sleep(0.1)
    await first.stop(timeout=2.0)
    assert finished == ["0.5"]  # the short one finished during the drain and was acked

    redelivered: list[tuple[str | None, int]] = []

    async def second_handler(env: Envelope, d: Delivery) -> None:
        redelivered.append((env.workset_id, d.num_delivered))

    second = DurableConsumer(
        js, ConsumerSpec("t-drain", [event_filter("workset.queued")], second_handler), pub
    )
    await second.start()
    await wait_for(lambda: len(redelivered) == 1, timeout=10)
    await asyncio.sleep(0.5)
    assert redelivered == [("30", 2)]  # only the returned one comes back, at once
    await second.stop(5)
