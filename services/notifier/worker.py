"""The delivery worker: sends due deliveries, one loop per channel, so a channel that is down or slow
never holds up another. Each send is claimed first (a lease in PostgreSQL), then made, then recorded
with its `notification.sent` / `notification.failed` event in one transaction. A notifier killed
mid-send leaves the claim to expire; the delivery is then sent again under the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import socket
from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Counter

from stamen.bus.subjects import PLATFORM_TENANT
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import NotificationFailed, NotificationSent
from stamen.notifications.channels.base import (
    ChannelAdapter,
    Outgoing,
    SendError,
    Sent,
    Throttled,
    redact_url,
)
from stamen.notifications.delivery import DeliveryBudget, GiveUp, SendFailure
from stamen.notifications.kinds import OPERATORS
from stamen.notifications.messages import Message, digest_message
from stamen.notifications.preferences import Channel
from stamen.notifications.repository import NOTIFY_CHANNEL, DeliveryRow, NotificationRepository
from stamen.notifications.settings import NotifySettings
from stamen.service.backoff import FailureBackoff
from stamen.store.db import still_open
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
SENT = Counter("stamen_notifications_total", "Notification sends by outcome", ["channel", "outcome"])
INLINE_WAIT_SECONDS = 1.0  # a rate limit this short is waited out inside the send


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[Channel, ChannelAdapter],
        settings: NotifySettings,
        *,
        region: str,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._channels = dict(channels)
        self._settings = settings
        self._region = region
        self._budget = DeliveryBudget(settings.max_attempts, settings.backoff())
        self._rng = rng or random.Random()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = {c: asyncio.Event() for c in self._channels}
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._listen: asyncpg.pool.PoolConnectionProxy | None = None
        self._listening = asyncio.Lock()

    async def start(self) -> None:
        await self._listen_for_inserts()
        self._loops = [asyncio.create_task(self._loop(c), name=f"notify:{c.value}") for c in self._channels]

    async def _listen_for_inserts(self) -> None:
        """LISTEN for new deliveries on a connection of its own, and again once that connection is lost
        (PostgreSQL restarted): the loops sleep until a NOTIFY, what is next due, or the safety-net poll
        (STAMEN_NOTIFY_POLL_SECONDS, 30 s), so a dead listener would leave new deliveries to the poll."""
        async with self._listening:
            if self._still_listening():
                return
            if self._listen is not None:
                old, self._listen = self._listen, None
                with contextlib.suppress(Exception):
                    await self._pool.release(old)
            conn = await self._pool.acquire()
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            except BaseException:
                await self._pool.release(conn)
                raise
            # Closed under it: wake the loops, which listen again before they claim.
            conn.add_termination_listener(self._notified)
            self._listen = conn

    def _still_listening(self) -> bool:
        return self._listen is not None and still_open(self._listen)

    def _notified(self, *_: object) -> None:
        for event in self._wake.values():
            event.set()

    async def stop(self, timeout: float) -> None:
        """Claim nothing more; give sends in flight `timeout` seconds (an unfinished one is sent again
        by whoever claims it after its lease)."""
        self._stopping.set()
        self._notified()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sends:
            _, pending = await asyncio.wait(set(self._sends), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._listen is not None:
            with contextlib.suppress(Exception):
                await self._listen.remove_listener(NOTIFY_CHANNEL, self._notified)
            await self._pool.release(self._listen)

    # --- one channel --------------------------------------------------------------------------------
    async def _loop(self, channel: Channel) -> None:
        backoff = FailureBackoff(1.0, 30.0)
        in_flight: set[asyncio.Task[None]] = set()
        wake = self._wake[channel]
        while not self._stopping.is_set():
            wake.clear()
            free = self._settings.channel_concurrency - len(in_flight)
            try:
                if not self._still_listening():
                    await self._listen_for_inserts()  # before the claim: what it misses, the claim finds
                groups = await self.claim(channel, free) if free > 0 else []
                # When the next one is due matters only to a loop with room and nothing due now (it sleeps
                # until then); one that claimed claims again, one that is full waits for a send to end.
                next_due = await self._next_due() if free > 0 and not groups else None
            except Exception as exc:  # the database is unreachable: try again later
                delay = backoff.failed()
                log.exception("notifier.claim_failed", channel=channel.value, error=str(exc), retry_in=delay)
                await self._sleep(wake, delay)
                continue
            backoff.succeeded()
            for group in groups:
                task = asyncio.create_task(self.send(group))
                in_flight.add(task)
                self._sends.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(self._sends.discard)
                task.add_done_callback(lambda _: wake.set())
            if groups and len(in_flight) < self._settings.channel_concurrency:
                continue  # there may be more due right now
            wait = self._settings.poll_seconds
            if next_due is not None:
                wait = min(wait, max(0.05, (next_due - datetime.now(UTC)).total_seconds()))
            await self._sleep(wake, wait)

    async def _sleep(self, wake: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=seconds)

    async def _next_due(self) -> datetime | None:
        async with self._pool.acquire() as conn:
            return await NotificationRepository(conn).next_due()

    async def claim(self, channel: Channel, limit: int) -> list[list[DeliveryRow]]:
        """Due deliveries of `channel`, grouped: a digest row comes with the rest of its batch."""
        lease = self._settings.lease_seconds
        async with self._pool.acquire() as conn, conn.transaction():
            repo = NotificationRepository(conn)
            groups = []
            for row in await repo.claim(channel.value, self.holder, lease, limit):
                if not row.digest:
                    groups.append([row])
                    continue
                batch_key = (
                    "digest:" + hashlib.sha256(f"{row.idempotency_key}:{row.id}".encode()).hexdigest()[:24]
                )
                siblings = await repo.claim_batch(row, self.holder, lease, batch_key)
                first = DeliveryRow(**{**row.__dict__, "batch_key": row.batch_key or batch_key})
                groups.append([first, *siblings])
            return groups

    # --- one send -----------------------------------------------------------------------------------
    async def send(self, group: list[DeliveryRow]) -> None:
        try:
            await self._send(group)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the outcome could not be recorded (database gone): the lease expires
            log.exception("notifier.record_failed", delivery_ids=[r.id for r in group], error=str(exc))

    async def _send(self, group: list[DeliveryRow]) -> None:
        first = group[0]
        channel = Channel(first.channel)
        out = _outgoing(group)
        if channel is Channel.LINEAR and out.message.opens_thread and first.thread is not None:
            async with self._pool.acquire() as conn:
                if await NotificationRepository(conn).resolved_later(first):
                    out = Outgoing(**{**out.__dict__, "options": {**out.options, "resolved_later": True}})
        failure: SendFailure | None = None
        sent: Sent | None = None
        try:
            async with asyncio.timeout(self._settings.send_timeout_seconds):
                sent = await self._channels[channel].send(out, self._gate)
        except Throttled as throttled:
            await self._record(group, "pending", retry_in=throttled.wait_seconds, uncount=True)
            SENT.labels(channel.value, "throttled").inc()
            return
        except SendError as exc:
            failure = exc.failure
        except TimeoutError:
            failure = SendFailure(
                f"timed out after {self._settings.send_timeout_seconds:g} s", retryable=True
            )
        except asyncio.CancelledError:
            raise  # stopping: the lease expires and the delivery is claimed again
        except Exception as exc:
            log.exception("notifier.send_crashed", delivery_id=first.id, channel=channel.value)
            failure = SendFailure(f"{type(exc).__name__}: {exc}", retryable=True)
        said = log.bind(
            delivery_ids=[r.id for r in group],
            channel=channel.value,
            owner=first.owner,
            recipient=_shown(first),
        )
        if sent is not None:
            state = "skipped" if sent.skipped else "delivered"
            await self._record(group, state, reference=sent.reference)
            SENT.labels(channel.value, state).inc()
            said.info("notifier.delivered", reference=sent.reference, state=state)
            return
        assert failure is not None
        decision = self._budget.after(failure, first.attempts, self._rng)
        if isinstance(decision, GiveUp):
            await self._record(group, "failed", error=decision.reason)
            SENT.labels(channel.value, "failed").inc()
            said.error("notifier.failed", attempts=first.attempts, error=decision.reason)
            return
        await self._record(group, "pending", error=failure.error, retry_in=decision.delay_seconds)
        SENT.labels(channel.value, "retry").inc()
        said.warning(
            "notifier.retry_later",
            attempts=first.attempts,
            error=failure.error,
            retry_in=round(decision.delay_seconds, 2),
        )

    async def _gate(self, limit: str, key: str) -> None:
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                wait = await NotificationRepository(conn).take_tokens(key, self._settings.limit(limit))
            if wait <= 0:
                return
            if wait > INLINE_WAIT_SECONDS:
                raise Throttled(wait)
            await asyncio.sleep(wait)

    async def _record(
        self,
        group: list[DeliveryRow],
        state: str,
        *,
        reference: str | None = None,
        error: str | None = None,
        retry_in: float | None = None,
        uncount: bool = False,
    ) -> None:
        async with UnitOfWork(self._pool) as uow:
            rows = await NotificationRepository(uow.connection).finish(
                [r.id for r in group],
                self.holder,
                state=state,
                reference=reference,
                error=error,
                retry_in=retry_in,
                uncount=uncount,
            )
            if state in ("delivered", "failed"):
                uow.publish(*(self._event(r, state) for r in rows))
            await uow.commit()
        if len(rows) < len(group):
            log.warning("notifier.lease_lost", delivery_ids=[r.id for r in group], recorded=len(rows))

    def _event(self, row: DeliveryRow, state: str) -> Envelope:
        payload = (
            NotificationSent(channel=row.channel, about_event_id=row.event_id, reference=row.reference or "")
            if state == "delivered"
            else NotificationFailed(
                channel=row.channel, about_event_id=row.event_id, error=row.last_error or ""
            )
        )
        return new_envelope(
            payload,
            tenant_id=PLATFORM_TENANT if row.owner == OPERATORS else row.owner,
            region=self._region,
            workset_id=row.workset_id,
        )


def _outgoing(group: list[DeliveryRow]) -> Outgoing:
    first = group[0]
    options = dict(first.message.get("options") or {})
    if len(group) == 1 and not first.digest:
        message = Message.model_validate(first.message["message"])
        key = first.idempotency_key
    else:
        messages = [Message.model_validate(r.message["message"]) for r in sorted(group, key=lambda r: r.id)]
        message = digest_message(first.owner, messages)
        key = first.batch_key or first.idempotency_key
    return Outgoing(
        owner=first.owner,
        channel=first.channel,
        recipient=first.recipient,
        idempotency_key=key,
        event_id=first.event_id,
        event_type=first.event_type,
        workset_id=first.workset_id if len(group) == 1 else None,
        message=message,
        options=options,
        attempt=first.attempts,
    )


def _shown(row: DeliveryRow) -> str:
    return redact_url(row.recipient) if row.channel == Channel.WEBHOOK.value else row.recipient
