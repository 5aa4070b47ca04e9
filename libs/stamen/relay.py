"""The outbox relay: publishes committed outbox rows to JetStream and marks them sent.

Woken by LISTEN/NOTIFY on commit, with a slow poll as a safety net; a failed pass is tried again
after a growing delay (1 s doubling to 30 s, back to 1 s after a success). Rows are claimed with
FOR UPDATE SKIP LOCKED so any number of relays can run. If a relay dies after publishing but
before marking, the row is published again and the server drops it as a duplicate (Nats-Msg-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import asyncpg.pool
import structlog

from stamen.bus.metrics import PUBLISHED
from stamen.bus.publisher import RawPublisher
from stamen.service.backoff import FailureBackoff
from stamen.store.inbox import Inbox
from stamen.store.outbox import NOTIFY_CHANNEL, OutboxQueue

log = structlog.get_logger(__name__)


class OutboxRelay:
    # Housekeeping runs at most this often per relay; several relays purging at once is harmless.
    PURGE_EVERY_SECONDS = 3600.0
    ERROR_BACKOFF = (1.0, 30.0)  # after a failed pass (NATS or the database down): first delay, cap

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: RawPublisher,
        *,
        batch_size: int = 200,
        poll_seconds: float = 2.0,
        outbox_retention_days: float = 7.0,
        inbox_retention_days: float = 31.0,
    ) -> None:
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
        self._listen_conn: asyncpg.pool.PoolConnectionProxy | None = None

    async def start(self) -> None:
        self._listen_conn = await self._pool.acquire()
        await self._listen_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
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
            if sent >= self._batch_size:
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
        """One batch: claim, publish in order, mark. Returns how many rows were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            queue = OutboxQueue(conn)
            rows = await queue.claim(self._batch_size)
            if not rows:
                return 0
            for row in rows:
                fresh = await self._publisher.publish_raw(row.subject, row.body, row.headers)
                PUBLISHED.labels("stored" if fresh else "duplicate").inc()
            await queue.mark_published([r.id for r in rows])
            return len(rows)

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
            await self._pool.release(self._listen_conn)
