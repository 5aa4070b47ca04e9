"""Durable timers: rows with a due time. Sleep until the earliest or until a new one is added."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from stamen.store.scheduling import DueTimer
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
TIMERS_CHANNEL = "stamen_timers"
FireTimer = Callable[[UnitOfWork, DueTimer], Awaitable[None]]


class TimerLoop:
    MAX_SLEEP = 60.0  # a safety net only: inserts wake the loop through NOTIFY

    def __init__(
        self, pool: asyncpg.Pool, handlers: dict[str, FireTimer], on_fired: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._handlers = handlers
        self._on_fired = on_fired
        self._wake = asyncio.Event()
        self._stopping = False

    async def run(self) -> None:
        async with self._pool.acquire() as listen_conn:
            await listen_conn.add_listener(TIMERS_CHANNEL, lambda *_: self._wake.set())
            while not self._stopping:
                fired = await self.fire_due()
                if fired:
                    self._on_fired()
                async with UnitOfWork(self._pool) as uow:
                    next_due = await uow.scheduling.next_timer_due()
                delay = self.MAX_SLEEP
                if next_due is not None:
                    delay = min(delay, max(0.0, (next_due - datetime.now(UTC)).total_seconds()))
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def fire_due(self) -> int:
        fired = 0
        while True:
            async with UnitOfWork(self._pool) as uow:
                due = await uow.scheduling.claim_due_timers(limit=1)
                if not due:
                    return fired
                timer = due[0]
                handler = self._handlers.get(timer.kind)
                if handler is None:
                    log.error("scheduler.unknown_timer", kind=timer.kind, timer_id=timer.id)
                else:
                    await handler(uow, timer)
                await uow.scheduling.mark_timer_fired(timer.id)
                await uow.commit()
            fired += 1
            log.info(
                "scheduler.timer_fired",
                kind=timer.kind,
                workset_id=timer.workset_id,
                due_at=str(timer.due_at),
            )

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
