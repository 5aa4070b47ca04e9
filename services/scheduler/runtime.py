"""Builds the scheduler's parts for one process and runs them as background tasks."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from services.scheduler.admission import Admitter
from services.scheduler.clusters import bootstrap_clusters
from services.scheduler.dispatch import Dispatcher, StepPlanner
from services.scheduler.evacuation import RegionEvacuation
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.handlers import fire_retry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner, default_executor_factories
from services.scheduler.timers import TimerLoop
from stamen.regions.settings import RegionSettings
from stamen.service.keys import BUS, CONSUMERS, POOL, POSTGRES, SETTINGS
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
LOOP = web.AppKey("scheduler_loop", SchedulerLoop)


def holder_name() -> str:
    return f"scheduler@{socket.gethostname()}:{os.getpid()}"


def build_loop(app: web.Application, registry: ExecutorRegistry, planner: StepPlanner) -> SchedulerLoop:
    pool, settings, holder = app[POOL], app[SETTINGS], holder_name()
    dispatcher = Dispatcher(pool, registry, planner, holder)
    return SchedulerLoop(
        pool,
        Admitter(pool, settings, holder, dispatcher),
        dispatcher,
        JobMonitor(pool, registry, holder, dispatcher),
        settings.scheduler_poll_seconds,
        app[POSTGRES],
        RegionEvacuation(pool, registry, holder, RegionSettings().region_lost_after_seconds),
        idle_poll_seconds=settings.scheduler_idle_poll_seconds,
        # A queued workset's event wakes the loop only while the consumers run on a live connection.
        events_flow=lambda: CONSUMERS in app and bool(app[CONSUMERS]) and BUS in app and app[BUS].up,
    )


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    async with UnitOfWork(app[POOL]) as uow:
        clusters = await bootstrap_clusters(uow, app[SETTINGS])
        await uow.commit()
    log.info("scheduler.clusters", clusters=[c.name for c in clusters])
    settings = app[SETTINGS]
    registry = ExecutorRegistry(default_executor_factories(settings))
    loop = build_loop(app, registry, WorksetPlanner(settings))
    registry.on_job_exit(loop.wake)  # a local step that ends is noticed now, not at the next poll
    app[LOOP] = loop
    timers = TimerLoop(app[POOL], {"retry": fire_retry}, on_fired=loop.wake, postgres=app[POSTGRES])
    tasks = [
        asyncio.create_task(loop.run(), name="scheduler-loop"),
        asyncio.create_task(timers.run(), name="timers"),
    ]
    yield
    loop.stop()
    timers.stop()
    # The current pass may be submitting a step: let it store the job handle rather than leave the
    # step 'submitting' (which the next scheduler would have to look up on the cluster and adopt).
    _, unfinished = await asyncio.wait(tasks, timeout=settings.drain_timeout_seconds)
    # Running jobs are left running: they belong to the cluster, and the next scheduler re-attaches.
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
