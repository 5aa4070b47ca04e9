"""The exit follower records a local step's end, and submits the next step, when the step's exit is told,
without a pass of the loop; the loop is woken when the workset gives its slot back, and its passes leave
the followed steps alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.exits import ExitFollower
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from services.scheduler.tests.support import add_cluster, enqueue, state_of
from services.scheduler.tests.test_scheduler_local import settings_for
from stamen.executors.local_files import read_job_record

POLL_SECONDS = 60.0  # far longer than the test may take: only told exits can move the steps along


def wired(
    pool: asyncpg.Pool, settings_path: Path, *, told: bool = True
) -> tuple[SchedulerLoop, ExitFollower, Dispatcher]:
    settings = settings_for(settings_path, [{"name": n, "argv": ["true"]} for n in ("one", "two", "three")])
    registry = ExecutorRegistry(default_executor_factories(settings))
    holder = "follower-test"
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), holder)
    monitor = JobMonitor(pool, registry, holder, dispatcher)
    follower = ExitFollower(monitor, registry, POLL_SECONDS)
    dispatcher.on_running = follower.follow
    if told:
        registry.on_job_exit(follower.exit_told)
    loop = SchedulerLoop(
        pool,
        Admitter(pool, settings, holder, dispatcher),
        dispatcher,
        monitor,
        poll_seconds=POLL_SECONDS,
        follower=follower,
    )
    return loop, follower, dispatcher


async def steps_submitted(pool: asyncpg.Pool, workset_id: str) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM step_runs WHERE workset_id = $1", workset_id))


async def test_steps_follow_each_other_without_a_pass(pool: asyncpg.Pool, tmp_path: Path) -> None:
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop, follower, _ = wired(pool, tmp_path)
    woken = asyncio.Event()
    follower.wake_loop = woken.set  # in place of the loop's wake: no pass runs in this test
    following = asyncio.create_task(follower.run())
    try:
        await asyncio.sleep(0)  # the follower runs: it follows what is submitted from now on
        assert await loop.tick()  # the one pass: admits the workset and submits its first step
        started = time.monotonic()
        while (state := await state_of(pool, ws_id)) != "completed":
            assert time.monotonic() - started < 30, f"still {state}: an end waited for a pass"
            await asyncio.sleep(0.02)
        await asyncio.wait_for(woken.wait(), 10)  # the slot it gave back: the loop is told
    finally:
        follower.stop()
        await asyncio.wait_for(following, 30)
    assert await steps_submitted(pool, ws_id) == 3
    assert not follower.following


async def test_a_pass_leaves_the_followed_steps_to_the_follower(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A followed step that ended is not recorded by the loop's pass (the follower has not been told yet):
    the two never poll and record the same end."""
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop, follower, _ = wired(pool, tmp_path, told=False)  # never told of an exit: it polls when asked
    following = asyncio.create_task(follower.run())
    try:
        await asyncio.sleep(0)
        assert await loop.tick()
        async with pool.acquire() as conn:
            workdir = await conn.fetchval(
                "SELECT handle ->> 'workdir' FROM step_runs WHERE workset_id = $1", ws_id
            )
        job_file = Path(workdir) / "one.job.json"  # the runner appends the step's status to it
        deadline = time.monotonic() + 30
        while (record := read_job_record(job_file)) is None or record.status is None:
            assert time.monotonic() < deadline, "step one never ended"
            await asyncio.sleep(0.02)
        assert not await loop.tick()  # the pass polls nothing it follows: nothing recorded
        assert await steps_submitted(pool, ws_id) == 1
        assert (await follower.poll_once()).finished == 1  # the follower records it when it polls
        assert await steps_submitted(pool, ws_id) == 2
    finally:
        follower.stop()
        await asyncio.wait_for(following, 30)
