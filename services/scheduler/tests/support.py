"""Helpers for scheduler tests: queue worksets directly, build an in-process scheduler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.evacuation import RegionEvacuation
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from stamen.domain.lifecycle import WorksetState
from stamen.events.types import WorksetQueued
from stamen.intake import submit_workset
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork
from tests.intake.s3kit import grant


def write_pipelines(path: Path, steps: list[dict[str, Any]], name: str = "test-pipe") -> Path:
    path.write_text(yaml.safe_dump({"pipelines": [{"name": name, "steps": steps}]}))
    return path


async def add_cluster(
    pool: asyncpg.Pool,
    name: str = "local",
    max_concurrent: int = 2,
    workdir: Path | None = None,
    region: str = "us-west-2",
) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(
            ClusterRecord(
                name, region, "local", max_concurrent, config={"workdir_root": str(workdir or "/tmp")}
            )
        )
        await uow.commit()


async def enqueue(
    pool: asyncpg.Pool, tenant: str, *, pipeline: str = "test-pipe", priority: str = "normal", **spec: Any
) -> str:
    """A workset straight to `queued` (the validator's part is tested elsewhere); its tenant may read the
    lab bucket its sample names (the scheduler checks before every dispatch)."""
    await grant(pool, tenant, "lab", "read-only")
    result = await submit_workset(
        pool,
        tenant_id=tenant,
        name=f"{tenant}-ws",
        spec={"pipeline": pipeline, "samples": [{"id": "S1", "r1": "s3://lab/S1_R1.fq.gz"}], **spec},
        region="us-west-2",
        source="api",
        actor="test",
        priority=priority,
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(result.workset_id, for_update=True)
        ws.max_duration_seconds = spec.get("max_duration_seconds")
        ws.transition(WorksetState.VALIDATING, actor="test")
        ws.transition(WorksetState.QUEUED, actor="test", event=WorksetQueued(priority=priority))
        await uow.worksets.save(ws)
        await uow.commit()
    return result.workset_id


def in_process_scheduler(
    pool: asyncpg.Pool,
    settings: Settings,
    holder: str = "test-scheduler",
    *,
    registry: ExecutorRegistry | None = None,
    submit_grace_seconds: float = 10.0,
    lost_after_seconds: float = 300.0,
    idle_poll_seconds: float | None = None,
    events_flow: Callable[[], bool] | None = None,
) -> SchedulerLoop:
    registry = registry or ExecutorRegistry(default_executor_factories(settings))
    dispatcher = Dispatcher(
        pool, registry, WorksetPlanner(settings), holder, submit_grace_seconds=submit_grace_seconds
    )
    return SchedulerLoop(
        pool,
        Admitter(pool, settings, holder, dispatcher),
        dispatcher,
        JobMonitor(pool, registry, holder, dispatcher),
        poll_seconds=0.1,
        evacuation=RegionEvacuation(pool, registry, holder, lost_after_seconds),
        idle_poll_seconds=idle_poll_seconds,
        events_flow=events_flow,
    )


async def state_of(pool: asyncpg.Pool, workset_id: str) -> str:
    async with pool.acquire() as conn:
        return str(await conn.fetchval("SELECT state FROM worksets WHERE id = $1", workset_id))


async def run_until(
    loop: SchedulerLoop, pool: asyncpg.Pool, workset_id: str, states: set[str], timeout: float = 30
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        await loop.tick()
        state = await state_of(pool, workset_id)
        if state in states:
            return state
        assert time.monotonic() < deadline, f"{workset_id} still {state}"
        await asyncio.sleep(0.1)
