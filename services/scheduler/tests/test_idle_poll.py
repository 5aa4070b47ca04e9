"""An idle scheduler (nothing queued, admitted or running) waits for its wake-ups, polling the database
only every `idle_poll_seconds`, and only while events can wake it; any work in flight brings back the
usual poll."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg

from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from tests.waiting import eventually


async def test_an_idle_scheduler_sleeps_long_only_while_events_can_wake_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work", max_concurrent=1)
    flowing = [True]
    loop = in_process_scheduler(pool, settings, idle_poll_seconds=30.0, events_flow=lambda: flowing[0])
    assert await loop.tick() is False
    assert loop.idle and loop.sleep_seconds() == 30.0
    flowing[0] = False  # NATS away: the database is the only way to learn of queued work
    assert loop.sleep_seconds() == 0.1
    flowing[0] = True

    # One workset runs (a long step), one waits for its slot: the usual poll, for the job and the slot.
    running, waiting = await enqueue(pool, "acme"), await enqueue(pool, "acme")
    assert await loop.tick() is True
    assert {await state_of(pool, running), await state_of(pool, waiting)} == {"running", "queued"}
    await loop.tick()
    assert not loop.idle and loop.sleep_seconds() == 0.1


async def test_a_queued_workset_wakes_an_idle_scheduler(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """What the scheduler-queued consumer does on workset.queued: wake() ends the long sleep."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("pass")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    loop = in_process_scheduler(pool, settings, idle_poll_seconds=3600.0, events_flow=lambda: True)
    task = asyncio.create_task(loop.run())
    try:
        await eventually(lambda: asyncio.sleep(0, loop.idle), 10, "the first pass to find nothing")
        ws = await enqueue(pool, "acme")
        loop.wake()

        async def completed() -> bool:
            return await state_of(pool, ws) == "completed"

        await eventually(completed, 30, "the workset to run to completion")
    finally:
        loop.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
