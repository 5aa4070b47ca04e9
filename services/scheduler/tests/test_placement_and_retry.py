"""Region health in admission, partial retry across clusters, and requeue's fresh budget, on the real
store and the real local executor."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from services.scheduler.admission import Admitter
from services.scheduler.handlers import decide_retry, fire_retry, retry_policy
from services.scheduler.loop import SchedulerLoop
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, run_until, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from services.scheduler.timers import TimerLoop
from stamen.commands import requeue
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetDiagnosed
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork


async def test_a_cluster_in_a_region_that_is_down_is_not_chosen(pool: asyncpg.Pool, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, [{"name": "x", "argv": script("pass")}])
    await add_cluster(pool, "west", region="us-west-2")
    await add_cluster(pool, "east", region="us-east-1")
    admitter = Admitter(pool, settings, "test")
    # Without a region_health row a region is healthy: the preferred cluster wins.
    first = await enqueue(pool, "acme", preferred_cluster="west")
    placed = await admitter.admit_next()
    assert placed is not None and placed.workset_id == first and placed.cluster == "west"

    async with UnitOfWork(pool) as uow:
        await uow.slots.set_region_health("us-west-2", "down", "AZ outage")
        await uow.commit()
    second = await enqueue(pool, "beta", preferred_cluster="west")
    placed = await admitter.admit_next()
    assert placed is not None and placed.workset_id == second and placed.cluster == "east"
    assert "west" not in placed.scores  # ineligible: not scored as a candidate

    async with UnitOfWork(pool) as uow:
        await uow.slots.set_region_health("us-east-1", "down", "also out")
        await uow.commit()
    third = await enqueue(pool, "gamma")
    # Every region down: nowhere is better, so the work goes on rather than stall the whole fleet on what
    # the probes saw (stamen.domain.regions.regions_to_avoid); both clusters are candidates again.
    placed = await admitter.admit_next()
    assert placed is not None and placed.workset_id == third and set(placed.scores) == {"west", "east"}


async def diagnose(pool: asyncpg.Pool, settings: Settings, ws_id: str, retry_class: str = "transient") -> str:
    """What the diagnostics service would send for the workset's current attempt, handled by the scheduler."""
    async with UnitOfWork(pool) as uow:
        attempt = (await uow.worksets.get(ws_id)).attempt
    diagnosed = new_envelope(
        WorksetDiagnosed(attempt=attempt, code="WS-NET-001", retry_class=retry_class, retryable=True),
        tenant_id="acme",
        region="us-west-2",
        workset_id=ws_id,
    )
    async with UnitOfWork(pool) as uow:
        await decide_retry(uow, diagnosed, policy=retry_policy(settings))
        await uow.commit()
    return await state_of(pool, ws_id)


async def fire_retry_timer(pool: asyncpg.Pool, loop: SchedulerLoop, within: float = 15.0) -> None:
    """Fire the workset's retry timer once it is due (settings_for: due within 0.5 s)."""
    timers = TimerLoop(pool, {"retry": fire_retry}, loop.wake)
    deadline = time.monotonic() + within
    while await timers.fire_due() == 0:
        assert time.monotonic() < deadline, f"no retry timer came due within {within}s"
        await asyncio.sleep(0.05)


async def first_attempt_fails_on_a(pool: asyncpg.Pool, tmp_path: Path) -> tuple[Settings, str, SchedulerLoop]:
    """Two clusters a and b; a workset preferring a whose align step fails on attempt 1 and later needs
    the stage step's output in its own workdir."""
    steps = [
        {"name": "stage", "argv": script("open('staged', 'w').write('reads')")},
        {
            "name": "align",
            "argv": script("import os; assert os.environ['STAMEN_ATTEMPT'] != '1'; open('staged').read()"),
        },
    ]
    settings = settings_for(tmp_path, steps)
    await add_cluster(pool, "a", workdir=tmp_path / "work-a")
    await add_cluster(pool, "b", workdir=tmp_path / "work-b")
    ws_id = await enqueue(pool, "acme", preferred_cluster="a")
    loop = in_process_scheduler(pool, settings)
    assert await run_until(loop, pool, ws_id, {"failed", "completed"}) == "failed"
    return settings, ws_id, loop


async def test_a_retry_on_another_cluster_runs_the_steps_whose_outputs_are_not_there(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings, ws_id, loop = await first_attempt_fails_on_a(pool, tmp_path)
    async with UnitOfWork(pool) as uow:
        await uow.clusters.set_cluster_status("a", "draining")  # the retry has to go elsewhere
        await uow.commit()
    assert await diagnose(pool, settings, ws_id) == "retry_wait"
    await fire_retry_timer(pool, loop)
    assert await run_until(loop, pool, ws_id, {"failed", "completed"}) == "completed"
    async with pool.acquire() as conn:
        runs = await conn.fetch(
            "SELECT attempt, cluster, step, state FROM step_runs WHERE workset_id = $1 ORDER BY id", ws_id
        )
    assert [tuple(r) for r in runs] == [
        (1, "a", "stage", "succeeded"),
        (1, "a", "align", "failed"),
        (2, "b", "stage", "succeeded"),  # a's output is not in b's workdir: staged again on b
        (2, "b", "align", "succeeded"),
    ]


async def test_a_retry_on_the_same_cluster_resumes_at_the_failed_step(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings, ws_id, loop = await first_attempt_fails_on_a(pool, tmp_path)
    assert await diagnose(pool, settings, ws_id) == "retry_wait"
    await fire_retry_timer(pool, loop)
    assert await run_until(loop, pool, ws_id, {"failed", "completed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.step_run_counts(ws_id) == {"stage": 1, "align": 2}


async def test_a_requeued_workset_gets_a_fresh_budget_and_the_budget_it_was_given(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [{"name": "boom", "argv": script("raise SystemExit(1)")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme", max_retries=0)
    loop = in_process_scheduler(pool, settings)

    async def fail_once() -> str:
        assert await run_until(loop, pool, ws_id, {"failed"}) == "failed"
        return await diagnose(pool, settings, ws_id)

    assert await fail_once() == "dead_lettered"  # attempt 1, no retries allowed
    # --set max_retries=1: the admission that follows keeps it (it only reads the spec's once).
    assert await requeue(pool, ws_id, actor="alice", changes={"max_retries": 1}) == "queued"
    assert await fail_once() == "retry_wait"  # attempt 2: retry 1/1
    await fire_retry_timer(pool, loop)
    assert await fail_once() == "dead_lettered"  # attempt 3: budget used up
    # Requeued again without changes: a fresh budget, so the next failure is retried, not parked.
    await requeue(pool, ws_id, actor="alice")
    assert await fail_once() == "retry_wait"  # attempt 4
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        runs = await uow.slots.runs(ws_id)
    assert (ws.attempt, ws.max_retries, ws.retry_count) == (4, 1, 1)
    assert [r["outcome"] for r in runs] == ["failed"] * 4
