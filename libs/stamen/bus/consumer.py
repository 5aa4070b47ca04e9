"""Durable pull consumers: explicit ack, bounded concurrency, heartbeats, delayed redelivery, parking."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from stamen.bus.acks import ACK_GATHER_SECONDS, ack_batch
from stamen.bus.connections import headers_of
from stamen.bus.metrics import CONSUMED, HANDLER_SECONDS, IN_FLIGHT
from stamen.bus.parked import REPLAY_FOR
from stamen.bus.publisher import RawPublisher
from stamen.bus.pull import PullStream
from stamen.bus.subjects import EVENTS_STREAM, dlq_subject
from stamen.events.envelope import Envelope, UndecodableMessage, decode_envelope

log = structlog.get_logger(__name__)


class RetryLater(Exception):
    """Raised by a handler that wants the message again after `delay` seconds (nak with delay)."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay


@dataclass(frozen=True)
class Delivery:
    """What the bus knows about this delivery, beyond the event itself."""

    subject: str
    stream_seq: int
    num_delivered: int
    headers: dict[str, str]


EventHandler = Callable[[Envelope, Delivery], Awaitable[None]]


class DependencyGate(Protocol):
    """What the consumer needs to know about a dependency (stamen.service.dependencies.Dependency)."""

    @property
    def reachable(self) -> bool: ...

    async def wait_reachable(self) -> None: ...

    async def check(self) -> bool: ...


@dataclass
class ConsumerSpec:
    durable: str
    filter_subjects: list[str]
    handler: EventHandler
    stream: str = EVENTS_STREAM
    ack_wait_seconds: float = 30.0
    max_deliver: int = 5
    concurrency: int = 8
    # Delay before redelivery after an unexpected handler error, by delivery number (last repeats).
    error_delays: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)
    deliver_new_only: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # How long an ack waits to be sent with others (stamen.bus.acks): shared by the connection's consumers
    # with the same window.
    ack_gather_seconds: float = ACK_GATHER_SECONDS


class DurableConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        parking: RawPublisher,
        gate: DependencyGate | None = None,
    ) -> None:
        self._js = js
        self.spec = spec
        self._parking = parking
        # While the gate is closed (PostgreSQL unreachable) no fetch is made. A message that the fetch
        # already waiting at the server receives meanwhile is held by its handler until the database
        # answers (_run_handler): none spends its delivery budget on an outage.
        self._gate = gate
        self._poll: PullStream | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        # Messages being handled, and since when (the loop's clock): one heartbeat task for all of them,
        # alive only while there are any (a task and a timer per message cost more than the handling of
        # a quick one; an idle consumer wakes for nothing).
        self._handling: dict[int, tuple[Msg, float]] = {}  # by id(msg): a Msg is not hashable
        self._heartbeats: asyncio.Task[None] | None = None
        self._in_flight = IN_FLIGHT.labels(spec.durable)
        self._handler_seconds = HANDLER_SECONDS.labels(spec.durable)
        # The connection's acks go out together (JetStreamContext keeps its client as `_nc`).
        self._acks = ack_batch(getattr(js, "_nc", js), spec.ack_gather_seconds)

    def consumer_config(self) -> ConsumerConfig:
        s = self.spec
        return ConsumerConfig(
            name=s.durable,
            durable_name=s.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait_seconds,
            max_deliver=s.max_deliver,
            max_ack_pending=max(s.concurrency * 4, 64),
            deliver_policy=DeliverPolicy.NEW if s.deliver_new_only else DeliverPolicy.ALL,
            filter_subjects=list(s.filter_subjects) if len(s.filter_subjects) > 1 else None,
            filter_subject=s.filter_subjects[0] if len(s.filter_subjects) == 1 else None,
        )

    async def start(self) -> None:
        # add_consumer creates the durable or updates its settings to match this code.
        await self._js.add_consumer(self.spec.stream, config=self.consumer_config())
        self._sub = await self._js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
        self._poll = PullStream(self._sub)
        self._runner = asyncio.create_task(self._run(), name=f"consumer:{self.spec.durable}")
        self.ready.set()

    def refetch(self) -> None:
        """The client reconnected: the pull request waiting at the server may be gone with it, ask again."""
        if self._poll is not None:
            self._poll.cut_short()

    async def _run(self) -> None:
        assert self._poll is not None
        while not self._stopping.is_set():
            free = self.spec.concurrency - len(self._tasks)
            if free <= 0:
                # Bounded concurrency: fetch no more than we can work on; wait for a handler to end.
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            if self._gate is not None and not self._gate.reachable:
                await self._gate.wait_reachable()
                continue
            try:
                await self._poll.ask(free)
                msg = await self._poll.next()
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:  # connection trouble: back off, the client reconnects by itself
                log.warning("bus.fetch_failed", consumer=self.spec.durable, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            if msg is None:
                continue
            if self._stopping.is_set():
                # Delivered during shutdown: hand it straight back for another instance.
                await _quietly(msg.nak())
                continue
            task = asyncio.create_task(self._handle(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        durable = self.spec.durable
        meta = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            stream_seq=meta.sequence.stream,
            num_delivered=meta.num_delivered,
            headers=headers_of(msg.headers),
        )
        self._in_flight.inc()
        started = time.perf_counter()
        self._handling[id(msg)] = (msg, asyncio.get_running_loop().time())
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.create_task(self._heartbeat())
        outcome = "acked"
        event_type = delivery.headers.get("Stamen-Event-Type", "unknown")
        try:
            replay_for = delivery.headers.get(REPLAY_FOR)
            if replay_for is not None and replay_for != durable:
                outcome = "not_for_us"  # a parked message sent back for another consumer
                self._acks.ack(msg)
                return
            try:
                envelope = decode_envelope(msg.data)
            except UndecodableMessage as exc:
                outcome = "parked"
                await self._park(msg, delivery, exc)
                return
            with structlog.contextvars.bound_contextvars(
                event_id=str(envelope.id),
                event_type=envelope.type,
                workset_id=envelope.workset_id,
                tenant_id=envelope.tenant_id,
                correlation_id=str(envelope.correlation_id),
                consumer=durable,
            ):
                try:
                    await self._run_handler(envelope, delivery)
                except UndecodableMessage as exc:
                    # The handler found the payload unusable (e.g. no workset_id): no retry can help.
                    outcome = "parked"
                    await self._park(msg, delivery, exc)
                    return
                except RetryLater as later:
                    outcome = "delayed"
                    log.info("bus.redeliver_later", delay=later.delay, reason=str(later))
                    await msg.nak(delay=later.delay)
                    return
                except asyncio.CancelledError:
                    outcome = "returned"
                    await _quietly(msg.nak())
                    raise
                except Exception as exc:
                    outcome = "failed"
                    delays = self.spec.error_delays
                    delay = delays[min(delivery.num_delivered, len(delays)) - 1]
                    log.exception(
                        "bus.handler_failed",
                        error=str(exc),
                        delivery=delivery.num_delivered,
                        max_deliver=self.spec.max_deliver,
                        retry_in=delay,
                    )
                    await _quietly(msg.nak(delay=delay))
                    return
                self._acks.ack(msg)
        finally:
            del self._handling[id(msg)]
            self._in_flight.dec()
            self._handler_seconds.observe(time.perf_counter() - started)
            CONSUMED.labels(durable, event_type, outcome).inc()

    async def _run_handler(self, envelope: Envelope, delivery: Delivery) -> None:
        """The handler, run again on this same delivery (kept alive by the heartbeat) for as long as it
        fails while a dependency is unreachable: an outage never spends the message's budget. Whether
        it is unreachable is asked of the dependency itself (a probe), not guessed from the error, so a
        handler that fails for its own reasons is never held: its failure counts as usual."""
        while True:
            try:
                await self.spec.handler(envelope, delivery)
                return
            except (RetryLater, UndecodableMessage):
                raise
            except Exception as exc:
                if self._gate is None or await self._gate.check():
                    raise
                log.warning("bus.handler_waits_for_dependency", error=f"{type(exc).__name__}: {exc}")
                await self._gate.wait_reachable()

    async def _heartbeat(self) -> None:
        """Long handlers keep their message: tell the server we are still working on it. Every half
        interval, each message handled for an interval or more since it arrived or since its last
        heartbeat gets one, so none waits longer than 1.5 intervals (half the ack wait) for it. Ends
        when no message is being handled."""
        interval = max(self.spec.ack_wait_seconds / 3, 0.5)
        loop = asyncio.get_running_loop()
        while self._handling:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            for key, (msg, since) in list(self._handling.items()):
                if now - since >= interval and key in self._handling:
                    self._handling[key] = (msg, now)
                    await _quietly(msg.in_progress())

    async def _park(self, msg: Msg, delivery: Delivery, exc: UndecodableMessage) -> None:
        log.error(
            "bus.message_parked",
            consumer=self.spec.durable,
            subject=delivery.subject,
            stream_seq=delivery.stream_seq,
            reason=exc.reason,
            error=str(exc),
        )
        headers = {
            **delivery.headers,
            "Nats-Msg-Id": f"parked-{self.spec.durable}-{delivery.stream_seq}",
            "Stamen-Dlq-Reason": exc.reason,
            "Stamen-Dlq-Error": str(exc)[:1000],
            "Stamen-Dlq-Consumer": self.spec.durable,
            "Stamen-Dlq-Stream-Seq": str(delivery.stream_seq),
            "Stamen-Original-Subject": delivery.subject,
        }
        await self._parking.publish_raw(dlq_subject("undecodable", self.spec.durable), msg.data, headers)
        # term: never redeliver; the copy in the DLQ stream is the record.
        await msg.term()

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let in-flight handlers finish, return the rest to the server (nak)."""
        self._stopping.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        await self._acks.flush()  # the acks held back (stamen.bus.acks) leave before the subscription
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


async def _quietly(aw: Awaitable[None]) -> None:
    try:
        await aw
    except Exception as exc:
        log.warning("bus.ack_signal_failed", error=str(exc))
