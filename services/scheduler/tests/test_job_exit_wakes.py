"""A local step's end is recorded when its runner exits, not at the scheduler's next poll: the
registry passes the loop's wake to every executor that reports job exits (as runtime.py wires it)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from services.scheduler.tests.support import add_cluster, enqueue, state_of
from services.scheduler.tests.test_scheduler_local import settings_for

POLL_SECONDS = 60.0  # far longer than the test may take: only exit notices can move it along


async def test_three_steps_complete_long_before_one_poll_interval(pool: asyncpg.Pool, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, [{"name": n, "argv": ["sleep", "0.2"]} for n in ("one", "two", "three")]
    )
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    registry = ExecutorRegistry(default_executor_factories(settings))
    holder = "wakes"
    loop = SchedulerLoop(
        pool,
        Admitter(pool, settings, holder),
        Dispatcher(pool, registry, WorksetPlanner(settings), holder),
        JobMonitor(pool, registry, holder),
        poll_seconds=POLL_SECONDS,
    )
    registry.on_job_exit(loop.wake)
    started = time.monotonic()
    task = asyncio.create_task(loop.run())
    try:
        while (state := await state_of(pool, ws_id)) not in ("completed", "failed"):
            assert time.monotonic() - started < 30, f"still {state}: a step's end waited for a poll"
            await asyncio.sleep(0.05)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)
    assert state == "completed"
    assert time.monotonic() - started < POLL_SECONDS / 2
