"""The outbox relay: publishes committed outbox rows to JetStream and marks them sent.

Woken by LISTEN/NOTIFY on commit, with a slow poll as a safety net; a failed pass is tried again
after a growing delay (1 s doubling to 30 s, back to 1 s after a success). Rows are claimed with
FOR UPDATE SKIP LOCKED so any number of relays can run. If a relay dies after publishing but
before marking, the row is published again and the server drops it as a duplicate (Nats-Msg-Id).

Two kinds of failure: the broker unreachable (timeouts, a closed connection, no stream answering) says
nothing about the rows, so the pass backs off and no row is blamed; the broker refusing one row (larger
than its max payload, refused by the stream) is that row's problem: it is set aside, tried again after
1 s, 2 s, 4 s, ... and parked after `max_attempts`, while the rows behind it are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import asyncpg.pool
import structlog
from nats.errors import MaxPayloadError
from nats.js.errors import APIError

from stamen.bus.metrics import OUTBOX_REFUSED, PUBLISHED
from stamen.bus.publisher import RawPublisher
from stamen.retry.backoff import BackoffPolicy
from stamen.service.backoff import FailureBackoff
from stamen.settings import Settings
from stamen.store.inbox import Inbox
from stamen.store.outbox import NOTIFY_CHANNEL, OutboxQueue, OutboxRow

log = structlog.get_logger(__name__)


class OutboxRelay:
    # Housekeeping runs at most this often per relay; several relays purging at once is harmless.
    PURGE_EVERY_SECONDS = 3600.0
    ERROR_BACKOFF = (1.0, 30.0)  # after a failed pass (NATS or the database down): first delay, cap
    # Between attempts at a row the broker refused: 1 s, 2 s, 4 s, ... up to 60 s.
    ROW_BACKOFF = BackoffPolicy(initial_seconds=1.0, factor=2.0, cap_seconds=60.0, jitter="none")

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: RawPublisher,
        *,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
        outbox_retention_days: float = 7.0,
        inbox_retention_days: float = 31.0,
        max_attempts: int = 5,
    ) -> None:
        self._max_attempts = max_attempts
        self._outbox_retention_days = outbox_retention_days
        self._inbox_retention_days = inbox_retention_days
        self._next_purge = 0.0
        self._pool = pool
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._backoff = FailureBackoff(*self.ERROR_BACKOFF)
        self._task: asyncio.Task[None] | None = None
        self._set_aside = 0  # rows of the last pass the broker refused
        self._listen_conn: asyncpg.pool.PoolConnectionProxy | None = None

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, publisher: RawPublisher, settings: Settings) -> OutboxRelay:
        return cls(
            pool,
            publisher,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            outbox_retention_days=settings.outbox_retention_days,
            inbox_retention_days=settings.inbox_retention_days,
            max_attempts=settings.relay_max_attempts,
        )

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; opened again when the database restarted (the old one is
        closed then, and until it is back the poll is the only wake-up)."""
        if self._listen_conn is not None and _open(self._listen_conn):
            return
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._pool.release(self._listen_conn)
            self._listen_conn = None
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            log.warning("outbox.listen_failed", error=str(exc))
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:
            log.warning("outbox.listen_failed", error=str(exc))
            await self._pool.release(conn)
            return
        self._listen_conn = conn

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self._listen()
            # Cleared before the pass, so a NOTIFY that arrives during it wakes the next wait at once.
            self._wake.clear()
            try:
                sent = await self.publish_pending()
            except Exception as exc:
                delay = self._backoff.failed()
                log.warning("outbox.relay_failed", error=str(exc), retry_in=delay)
                # The unmarked rows are still there: try again after the backoff, without waiting for
                # a NOTIFY or the poll. Only stop() cuts the backoff short: commits during an outage
                # must not turn it into a busy loop of failing publishes.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            self._backoff.succeeded()
            if sent + self._set_aside >= self._batch_size:
                continue  # more are waiting
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + self.PURGE_EVERY_SECONDS
                try:
                    await self.purge_history()
                except Exception as exc:
                    log.warning("outbox.purge_failed", error=str(exc))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)

    async def publish_pending(self) -> int:
        """One batch: claim, publish in order, mark. Returns how many rows were published.

        A row the broker refuses is set aside (or parked) in the same transaction; an unreachable broker
        raises, so the whole pass is rolled back and tried again later."""
        async with self._pool.acquire() as conn, conn.transaction():
            queue = OutboxQueue(conn)
            rows = await queue.claim(self._batch_size)
            published: list[int] = []
            refused: list[tuple[OutboxRow, Exception]] = []
            for row in rows:
                try:
                    fresh = await self._publisher.publish_raw(row.subject, row.body, row.headers)
                except Exception as exc:
                    if not refuses_the_row(exc):
                        raise
                    refused.append((row, exc))
                    continue
                PUBLISHED.labels("stored" if fresh else "duplicate").inc()
                published.append(row.id)
            if published:
                await queue.mark_published(published)
            for row, refusal in refused:
                await self._set_row_aside(queue, row, refusal)
            self._set_aside = len(refused)
            return len(published)

    async def _set_row_aside(self, queue: OutboxQueue, row: OutboxRow, exc: Exception) -> None:
        attempt = row.attempts + 1
        park = attempt >= self._max_attempts
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        retry_in = self.ROW_BACKOFF.delay_for(attempt)
        await queue.record_failure(row.id, error, retry_in=retry_in, park=park)
        OUTBOX_REFUSED.labels("parked" if park else "retry").inc()
        (log.error if park else log.warning)(
            "outbox.row_parked" if park else "outbox.row_refused", outbox_id=row.id, event_id=row.event_id,
            subject=row.subject, size_bytes=len(row.body), attempt=attempt, max_attempts=self._max_attempts,
            error=error, **({} if park else {"retry_in": retry_in}))

    async def purge_history(self) -> tuple[int, int]:
        """Drop published outbox rows and inbox claims past their retention; returns both counts."""
        async with self._pool.acquire() as conn:
            outbox = await OutboxQueue(conn).purge_published(self._outbox_retention_days)
            inbox = await Inbox(conn).purge(self._inbox_retention_days)
        if outbox or inbox:
            log.info("outbox.purged", outbox_rows=outbox, inbox_rows=inbox)
        return outbox, inbox

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            with contextlib.suppress(Exception):
                await self._pool.release(self._listen_conn)


def refuses_the_row(exc: Exception) -> bool:
    """The broker answered, and its answer is about this message: larger than the max payload (checked by
    the client against the server's limit), or refused by the stream with a 4xx (e.g. over its maximum
    message size). Anything else (timeouts, closed connections, no responders, 5xx) is the broker being
    unreachable or unwell, which says nothing about the row."""
    if isinstance(exc, MaxPayloadError | ValueError | TypeError):
        return True
    code = exc.code if isinstance(exc, APIError) else None
    return code is not None and 400 <= code < 500


def _open(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """Whether a held connection still works. When its server goes away for good (a failover), the pool
    takes the connection back and the proxy refuses every call, is_closed() included."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
