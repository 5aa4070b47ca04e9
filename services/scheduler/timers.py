"""Durable timers: rows with a due time. Sleep until the earliest or until a new one is added."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from stamen.bus.consumer import DependencyGate
from stamen.service.backoff import FailureBackoff
from stamen.store.db import still_open
from stamen.store.timers import DueTimer
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
TIMERS_CHANNEL = "stamen_timers"
FireTimer = Callable[[UnitOfWork, DueTimer], Awaitable[None]]


class HandlerFailed(Exception):
    def __init__(self, timer: DueTimer, error: Exception) -> None:
        super().__init__(f"timer {timer.id} ({timer.kind}, workset {timer.workset_id}): {error}")
        self.timer = timer
        self.error = error


class TimerLoop:
    MAX_SLEEP = 60.0  # a safety net only: inserts wake the loop through NOTIFY
    ERROR_BACKOFF = (1.0, 30.0)  # after a failure: first delay, cap (doubling in between)
    HANDLER_RETRY_SECONDS = 5.0  # a timer whose handler raised is due again after this
    # A timer still due after a pass fired all it could is being fired by another replica (its row is
    # locked): looked at again after this, not at once (that spun, two transactions a turn, for as long
    # as the other's transaction lasted: up to ~20 passes per workset in the lifecycle bench).
    HELD_ELSEWHERE_RECHECK_SECONDS = 0.2

    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: dict[str, FireTimer],
        on_fired: Callable[[], None],
        postgres: DependencyGate | None = None,
    ) -> None:
        self._postgres = postgres
        self._pool = pool
        self._handlers = handlers
        self._on_fired = on_fired
        self._wake = asyncio.Event()  # set by NOTIFY (a timer was added) and by stop()
        self._stop = asyncio.Event()
        self._backoff = FailureBackoff(*self.ERROR_BACKOFF)

    async def run(self) -> None:
        """Until stopped. A failing pass (database down) is logged and tried again after a growing
        delay; a lost LISTEN connection is opened again after the same growing delay."""
        while not self._stop.is_set():
            try:
                async with self._pool.acquire() as listen_conn:
                    await listen_conn.add_listener(TIMERS_CHANNEL, self._notified)
                    try:
                        await self._serve(listen_conn)
                    finally:
                        if still_open(listen_conn):
                            await listen_conn.remove_listener(TIMERS_CHANNEL, self._notified)
            except Exception as exc:  # no connection for LISTEN: the database is unreachable
                if await self._waited_for_postgres(exc):
                    continue
                delay = self._backoff.failed()
                log.exception("scheduler.timers_listen_failed", error=str(exc), retry_in=delay)
                await self._back_off(delay)

    async def _serve(self, listen_conn: asyncpg.pool.PoolConnectionProxy) -> None:
        while not self._stop.is_set() and still_open(listen_conn):
            # Cleared before the pass reads anything: a NOTIFY that arrives during the pass sets it
            # again, and the wait below returns at once instead of sleeping past the new timer.
            self._wake.clear()
            try:
                delay = await self.run_pass()
            except Exception as exc:
                if await self._waited_for_postgres(exc):
                    continue
                delay = self._backoff.failed()
                log.exception("scheduler.timers_pass_failed", error=str(exc), retry_in=delay)
                await self._back_off(delay)
                continue
            self._backoff.succeeded()
            await self._sleep(delay)

    async def run_pass(self) -> float:
        """Fire what is due; returns how long to sleep until the next due timer (at most MAX_SLEEP)."""
        if await self.fire_due():
            self._on_fired()
        next_due = await self.next_due()
        if next_due is None:
            return self.MAX_SLEEP
        delay = (next_due - datetime.now(UTC)).total_seconds()
        return min(self.MAX_SLEEP, delay if delay > 0 else self.HELD_ELSEWHERE_RECHECK_SECONDS)

    async def next_due(self) -> datetime | None:
        async with UnitOfWork(self._pool) as uow:
            return await uow.timers.next_timer_due()

    async def fire_due(self) -> int:
        fired = 0
        while True:
            try:
                async with UnitOfWork(self._pool) as uow:
                    due = await uow.timers.claim_due_timers(limit=1)
                    if not due:
                        return fired
                    timer = due[0]
                    handler = self._handlers.get(timer.kind)
                    if handler is None:
                        log.error("scheduler.unknown_timer", kind=timer.kind, timer_id=timer.id)
                    else:
                        try:
                            await handler(uow, timer)
                        except Exception as exc:
                            raise HandlerFailed(timer, exc) from exc
                    await uow.timers.mark_timer_fired(timer.id)
                    await uow.commit()
            except HandlerFailed as failure:
                await self._postpone(failure.timer, failure.error)
                continue
            fired += 1
            log.info(
                "scheduler.timer_fired",
                kind=timer.kind,
                workset_id=timer.workset_id,
                due_at=str(timer.due_at),
            )

    async def _postpone(self, timer: DueTimer, error: Exception) -> None:
        """One timer's failing handler must not hold back the timers due after it: it is tried again
        later (its transaction was rolled back, so nothing of the failed try remains)."""
        async with UnitOfWork(self._pool) as uow:
            await uow.timers.postpone_timer(timer.id, self.HANDLER_RETRY_SECONDS)
            await uow.commit()
        log.error(
            "scheduler.timer_failed",
            kind=timer.kind,
            workset_id=timer.workset_id,
            timer_id=timer.id,
            error=f"{type(error).__name__}: {error}",
            retry_in=self.HANDLER_RETRY_SECONDS,
        )

    async def _waited_for_postgres(self, exc: Exception) -> bool:
        """If PostgreSQL is unreachable: wait until it answers (or stop()), then go on at once, rather
        than sit out a backoff that grew during a long outage."""
        if self._postgres is None or await self._postgres.check():
            return False
        log.warning("scheduler.timers_waiting_for_postgres", error=str(exc))
        waits = [
            asyncio.ensure_future(self._postgres.wait_reachable()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        self._backoff.succeeded()
        return True

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Until the next due time, a NOTIFY, or stop()."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _back_off(self, seconds: float) -> None:
        """After a failure: only stop() cuts it short. Not `_wake`, which a NOTIFY may have set just
        before the database went away and nothing clears while it is unreachable: waiting on it
        would make every backoff end at once (a busy loop of failures)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
