"""The durable timer loop on a real PostgreSQL: it survives failing passes and never sleeps past a timer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.scheduler.handlers import fire_retry
from services.scheduler.timers import FireTimer, TimerLoop
from stamen.store.timers import DueTimer
from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import TO_FAILED, S, workset_in


async def waiting_for_retry(pool: asyncpg.Pool, tenant: str = "acme") -> str:
    return await workset_in(pool, *TO_FAILED, S.RETRY_WAIT, tenant=tenant, attempt=1, retry_count=1)


async def add_timer(pool: asyncpg.Pool, ws_id: str, due: datetime) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.timers.add_timer(ws_id, "retry", due, {"attempt": 2})
        await uow.commit()


async def wait_for_state(pool: asyncpg.Pool, ws_id: str, state: str, within: float) -> float:
    """Seconds it took; fails after `within`."""
    start = time.monotonic()
    while True:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT state FROM worksets WHERE id = $1", ws_id) == state:
                return time.monotonic() - start
        assert time.monotonic() - start < within, f"{ws_id} not {state} after {within}s"
        await asyncio.sleep(0.05)


async def logged(logs: list[MutableMapping[str, Any]], event: str, within: float) -> None:
    """Until `event` is in the captured logs; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not any(e["event"] == event for e in logs):
        assert time.monotonic() < deadline, f"no {event} logged within {within}s"
        await asyncio.sleep(0.02)


class Running:
    """A TimerLoop running as a task for the test's duration."""

    def __init__(self, loop: TimerLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TimerLoop:
        self.task = asyncio.create_task(self.loop.run())
        return self.loop

    async def __aexit__(self, *_: object) -> None:
        self.loop.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)  # it ends by itself when stopped


class FlakyDatabase(TimerLoop):
    """The first pass fails the way a dropped database connection does."""

    ERROR_BACKOFF = (0.05, 0.2)
    failures_left = 1

    async def next_due(self) -> datetime | None:
        if self.failures_left:
            self.failures_left -= 1
            raise asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        return await super().next_due()


async def test_a_failing_pass_is_logged_and_the_loop_carries_on(pool: asyncpg.Pool) -> None:
    ws_id = await waiting_for_retry(pool)
    with structlog.testing.capture_logs() as logs:
        async with Running(FlakyDatabase(pool, {"retry": fire_retry}, on_fired=lambda: None)) as loop:
            await logged(logs, "scheduler.timers_pass_failed", within=10)
            await add_timer(pool, ws_id, datetime.now(UTC))
            await wait_for_state(pool, ws_id, "queued", within=5)
            assert isinstance(loop, FlakyDatabase) and not loop.failures_left
    failed = [e for e in logs if e["event"] == "scheduler.timers_pass_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"
    assert "connection was closed" in failed[0]["error"] and failed[0]["retry_in"] == 0.05


class QuickBackoff(TimerLoop):
    ERROR_BACKOFF = (0.1, 0.4)


async def test_an_unreachable_database_is_retried_with_a_backoff_even_after_a_notify() -> None:
    """A NOTIFY that arrived just before the database went away leaves the wake-up flag set, and
    nothing clears it while no connection can be opened: the backoff must not wait on it."""
    with socket.socket() as closed:  # bound, never listening: every connection is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        unreachable = await asyncpg.create_pool(f"postgresql://stamen@127.0.0.1:{port}/stamen", min_size=0)
        try:
            loop = QuickBackoff(unreachable, {"retry": fire_retry}, on_fired=lambda: None)
            loop._notified()  # the NOTIFY that came in before the outage
            with structlog.testing.capture_logs() as logs:
                async with Running(loop):
                    await asyncio.sleep(1.5)
        finally:
            await unreachable.close()
    tries = [e for e in logs if e["event"] == "scheduler.timers_listen_failed"]
    # 0, 0.1, 0.3, 0.7, 1.1, 1.5 s: at most 6 tries (a busy loop makes hundreds), at least 2.
    assert 2 <= len(tries) <= 6, f"{len(tries)} connection attempts in 1.5 s"
    assert [e["retry_in"] for e in tries] == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4][: len(tries)]
    assert all(e["log_level"] == "error" for e in tries)


class TimerAtTheEdge(TimerLoop):
    """Inserts a timer due now right after the pass has read the next due time, and waits until its
    NOTIFY has been delivered: the moment in which a loop that clears its wake-up flag only after
    reading would lose the notification and sleep for MAX_SLEEP (60 s)."""

    def __init__(self, pool: asyncpg.Pool, handlers: dict[str, FireTimer], ws_id: str) -> None:
        super().__init__(pool, handlers, on_fired=lambda: None)
        self.ws_id = ws_id
        self.inserted = False

    async def next_due(self) -> datetime | None:
        due = await super().next_due()
        if not self.inserted:
            self.inserted = True
            await add_timer(self._pool, self.ws_id, datetime.now(UTC))
            await asyncio.wait_for(self._wake.wait(), 5)  # the NOTIFY has arrived
        return due


async def test_a_timer_inserted_at_the_edge_of_a_pass_fires_promptly(pool: asyncpg.Pool) -> None:
    ws_id = await waiting_for_retry(pool)
    async with Running(TimerAtTheEdge(pool, {"retry": fire_retry}, ws_id)) as loop:
        took = await wait_for_state(pool, ws_id, "queued", within=5)
        assert isinstance(loop, TimerAtTheEdge) and loop.inserted
    assert took < 5 < TimerLoop.MAX_SLEEP


async def test_a_timer_whose_handler_fails_is_postponed_and_does_not_hold_back_the_others(
    pool: asyncpg.Pool,
) -> None:
    poison = await waiting_for_retry(pool, tenant="poison")
    healthy = await waiting_for_retry(pool, tenant="healthy")
    now = datetime.now(UTC)
    await add_timer(pool, poison, now - timedelta(seconds=2))  # due first, so claimed first
    await add_timer(pool, healthy, now - timedelta(seconds=1))

    async def handler(uow: UnitOfWork, timer: DueTimer) -> None:
        if timer.workset_id == poison:
            raise RuntimeError("handler bug")
        await fire_retry(uow, timer)

    loop = TimerLoop(pool, {"retry": handler}, on_fired=lambda: None)
    with structlog.testing.capture_logs() as logs:
        assert await loop.fire_due() == 1
    async with UnitOfWork(pool) as uow:
        poison_timer = (await uow.timers.timers_for(poison))[0]
        assert (await uow.worksets.get(healthy)).state is S.QUEUED
        assert (await uow.worksets.get(poison)).state is S.RETRY_WAIT
    assert poison_timer["fired_at"] is None
    assert poison_timer["due_at"] > now + timedelta(seconds=TimerLoop.HANDLER_RETRY_SECONDS - 1)
    [failed] = [e for e in logs if e["event"] == "scheduler.timer_failed"]
    assert failed["workset_id"] == poison and failed["error"] == "RuntimeError: handler bug"


async def test_a_timer_another_replica_is_firing_is_looked_at_again_later_not_at_once(
    pool: asyncpg.Pool,
) -> None:
    ws_id = await waiting_for_retry(pool)
    await add_timer(pool, ws_id, datetime.now(UTC) - timedelta(seconds=1))
    loop = TimerLoop(pool, {"retry": fire_retry}, lambda: None)
    async with pool.acquire() as other, other.transaction():  # another replica, firing it
        assert await other.fetchval("SELECT id FROM timers WHERE fired_at IS NULL FOR UPDATE") is not None
        assert await loop.run_pass() == TimerLoop.HELD_ELSEWHERE_RECHECK_SECONDS  # was 0: a busy loop
    assert await loop.run_pass() == TimerLoop.MAX_SLEEP  # free again: fired, nothing left
    await wait_for_state(pool, ws_id, "queued", 5)
