"""Parked messages: a message that exhausted max_deliver is copied, with its headers, to the STAMEN_DLQ
stream. (Dead letters are worksets, the `dead_letters` table; see docs/retry-recovery.md.)

The server announces exhaustion with a max-deliveries advisory (captured in STAMEN_ADVISORIES so none
is lost while this forwarder is down); the forwarder fetches the original by stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from stamen.bus.connections import headers_of
from stamen.bus.metrics import DEAD_LETTERED
from stamen.bus.publisher import RawPublisher
from stamen.bus.pull import LongPoll
from stamen.bus.subjects import ADVISORIES_STREAM, EVENTS_STREAM, dlq_subject, max_deliveries_advisory

log = structlog.get_logger(__name__)


class DeadLetterForwarder:
    def __init__(self, js: JetStreamContext, publisher: RawPublisher, consumer: str) -> None:
        self._js = js
        self._publisher = publisher
        self._consumer = consumer
        self._durable = f"dlq-forwarder-{consumer}"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._poll: LongPoll | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            name=self._durable,
            durable_name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            filter_subject=max_deliveries_advisory(EVENTS_STREAM, self._consumer),
        )
        await self._js.add_consumer(ADVISORIES_STREAM, config=config)
        self._sub = await self._js.pull_subscribe_bind(durable=self._durable, stream=ADVISORIES_STREAM)
        self._poll = LongPoll(self._sub)
        self._task = asyncio.create_task(self._run(), name=self._durable)

    def refetch(self) -> None:
        """The client reconnected: the pull request waiting at the server may be gone with it, ask again."""
        if self._poll is not None:
            self._poll.cut_short()

    async def _run(self) -> None:
        assert self._poll is not None
        while not self._stopping.is_set():
            try:
                msgs = await self._poll.fetch(10)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                log.warning("dlq.fetch_failed", consumer=self._consumer, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                try:
                    await self._forward(json.loads(msg.data))
                except Exception as exc:
                    log.exception("dlq.forward_failed", consumer=self._consumer, error=str(exc))
                    await msg.nak(delay=5)
                else:
                    await msg.ack()

    async def _forward(self, advisory: dict[str, object]) -> None:
        stream = str(advisory["stream"])
        seq = int(str(advisory["stream_seq"]))
        deliveries = str(advisory.get("deliveries", ""))
        try:
            original = await self._js.get_msg(stream, seq)
        except NotFoundError:
            log.error("dlq.original_gone", stream=stream, stream_seq=seq, consumer=self._consumer)
            return
        headers = {
            **headers_of(original.headers),
            "Nats-Msg-Id": f"dlq-{self._consumer}-{stream}-{seq}",
            "Stamen-Dlq-Reason": "max_deliver",
            "Stamen-Dlq-Consumer": self._consumer,
            "Stamen-Dlq-Stream-Seq": str(seq),
            "Stamen-Dlq-Deliveries": deliveries,
            "Stamen-Original-Subject": str(original.subject),
        }
        if original.headers and "Nats-Msg-Id" in original.headers:
            headers["Stamen-Original-Msg-Id"] = str(original.headers["Nats-Msg-Id"])
        await self._publisher.publish_raw(
            dlq_subject("max_deliver", self._consumer), original.data or b"", headers
        )
        DEAD_LETTERED.labels(self._consumer).inc()
        log.error(
            "dlq.dead_lettered",
            consumer=self._consumer,
            stream_seq=seq,
            deliveries=deliveries,
            subject=original.subject,
            event_id=headers.get("Stamen-Original-Msg-Id"),
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
