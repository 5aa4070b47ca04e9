"""A workset's spec is walked and planned once for all its steps (`WorksetPlans`), while the tenant's bucket
rights are asked before every step: a grant revoked, or a spec changed, between two steps stops the next."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from services.scheduler.tests.support import add_cluster, enqueue, run_until, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.domain.steps import StepSpec
from stamen.domain.workset import Workset
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord
from stamen.tenancy import BucketGrantRepository

STEPS = [{"name": n, "argv": script("pass")} for n in ("one", "two", "three")]


class CountingPlanner:
    def __init__(self, settings: Settings) -> None:
        self._planner = WorksetPlanner(settings)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, ws: Workset, cluster: ClusterRecord) -> list[StepSpec]:
        self.calls.append((ws.id, ws.attempt))
        return self._planner(ws, cluster)


def scheduler(pool: asyncpg.Pool, settings: Settings, planner: CountingPlanner) -> SchedulerLoop:
    registry = ExecutorRegistry(default_executor_factories(settings))
    dispatcher = Dispatcher(pool, registry, planner, "test-scheduler")
    return SchedulerLoop(
        pool,
        Admitter(pool, settings, "test-scheduler", dispatcher),
        dispatcher,
        JobMonitor(pool, registry, "test-scheduler", dispatcher),
        poll_seconds=0.1,
    )


async def failure_of(pool: asyncpg.Pool, workset_id: str) -> tuple[str, list[str]]:
    async with pool.acquire() as conn:
        reason = await conn.fetchval(
            "SELECT reason FROM workset_history WHERE workset_id = $1 AND to_state = 'failed'", workset_id
        )
        steps = await conn.fetch("SELECT step FROM step_runs WHERE workset_id = $1 ORDER BY id", workset_id)
    return str(reason), [r["step"] for r in steps]


async def test_a_workset_is_planned_once_for_all_its_steps(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The planner ran before every step (four times for three steps: admission, then after each end)."""
    settings = settings_for(tmp_path, STEPS)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    planner = CountingPlanner(settings)
    assert (
        await run_until(scheduler(pool, settings, planner), pool, ws_id, {"completed", "failed"})
        == "completed"
    )
    assert planner.calls == [(ws_id, 1)]


async def test_a_grant_revoked_between_two_steps_stops_the_next(pool: asyncpg.Pool, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, STEPS)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = scheduler(pool, settings, CountingPlanner(settings))
    await loop.tick()  # admitted, its first step submitted (its end is recorded by a later pass)
    assert await state_of(pool, ws_id) == "running"
    async with pool.acquire() as conn:
        await BucketGrantRepository(conn).revoke("acme", "lab")
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "failed"
    reason, steps = await failure_of(pool, ws_id)
    assert reason.startswith("S3_ACCESS: S3-ACCESS-001"), reason
    assert steps == ["one"]


async def test_a_spec_changed_between_two_steps_is_checked_and_planned_again(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The spec is compared in full with the one its locations and plan came from: a spec that names another
    bucket now is checked as it is now (refused here), not as it was at admission."""
    settings = settings_for(tmp_path, STEPS)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    planner = CountingPlanner(settings)
    loop = scheduler(pool, settings, planner)
    await loop.tick()
    async with pool.acquire() as conn:
        spec = json.loads(await conn.fetchval("SELECT spec FROM worksets WHERE id = $1", ws_id))
        spec["samples"][0]["r1"] = "s3://tenant-b-data/S1_R1.fq.gz"
        await conn.execute("UPDATE worksets SET spec = $2::jsonb WHERE id = $1", ws_id, json.dumps(spec))
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "failed"
    reason, steps = await failure_of(pool, ws_id)
    assert "tenant-b-data" in reason, reason
    assert steps == ["one"]
