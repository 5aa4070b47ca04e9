"""Evacuation: admitted work bound for a region that is down goes elsewhere.

Each pass (before dispatch) looks at admitted worksets whose cluster's region is down:

- No job of the current attempt there (admitted, or between two steps): re-routed at once. Its slot
  is given back and it is queued again, with the reason in its history; admission skips the region.
- A job running there: once the region has been down for STAMEN_REGION_LOST_AFTER_SECONDS, the job is
  stopped if the cluster still answers, and looked at: a job that had in fact succeeded is recorded as
  such; otherwise its step run is `lost`. The workset is queued again for a new attempt elsewhere, where
  the dispatcher resumes after the steps whose outputs were exported to S3 (local outputs stayed in
  the lost region, so those steps run again). A short outage does not throw away long jobs.

Stopping jobs is done like a submission: under the step runs' locks (`step_run_locks`: the monitor
does not record the same job's end in between, no submitter or reconciler touches them) and with no
transaction open, then recorded in a short transaction that checks the workset and its steps are
still as they were read. A job is never both lost and carried on: no attempt runs in two regions at
once.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from services.scheduler.executors import ExecutorRegistry
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.types import StepCompleted, WorksetQueued
from stamen.executors.base import JobState, JobStatus
from stamen.store.clusters import ClusterRecord
from stamen.store.step_runs import ActiveStep, StrandedWorkset, step_run_locks
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
S = WorksetState
STOP_TIMEOUT_SECONDS = 20.0  # stopping and looking at one job in a region that may not answer


def _unmoved(ws: Workset, s: StrandedWorkset) -> bool:
    """Still in the attempt, and on the cluster, it was found stranded in."""
    return ws.state in (S.SCHEDULED, S.RUNNING) and ws.attempt == s.attempt and ws.cluster == s.cluster


class RegionEvacuation:
    def __init__(
        self, pool: asyncpg.Pool, executors: ExecutorRegistry, holder: str, lost_after_seconds: float
    ) -> None:
        self._pool = pool
        self._executors = executors
        self._holder = holder
        self._lost_after = lost_after_seconds

    async def run_once(self) -> int:
        """Returns how many worksets were sent back to the queue."""
        async with UnitOfWork(self._pool) as uow:
            stranded = await uow.step_runs.worksets_in_down_regions()
        moved = 0
        for s in stranded:
            if s.active and s.down_seconds < self._lost_after:
                continue  # its job may still finish if the region comes back soon
            try:
                moved += await self._evacuate(s)
            except Exception as exc:  # one workset must not hold up the others
                log.exception("scheduler.evacuation_failed", workset_id=s.workset_id, error=str(exc))
        return moved

    async def _evacuate(self, s: StrandedWorkset) -> int:
        async with UnitOfWork(self._pool) as uow:
            ws = await uow.worksets.get(s.workset_id)
            if not _unmoved(ws, s):
                return 0  # it moved on meanwhile
            steps = await uow.step_runs.active_steps(ws.id, ws.attempt)
            cluster = await uow.clusters.cluster(s.cluster) if steps else None
        async with step_run_locks(self._pool, [step.id for step in steps]) as held:
            if not held:
                return 0  # a submitter, a reconciler or another replica is at one of its steps: next pass
            if steps and s.down_seconds < self._lost_after:
                return 0  # a job appeared since the listing: wait for the threshold
            # The cluster is asked with no transaction open; its answers are recorded below.
            outcomes = [await self._stop_and_look(cluster, step) for step in steps] if cluster else []
            return await self._record(s, steps, outcomes)

    async def _record(
        self, s: StrandedWorkset, steps: list[ActiveStep], outcomes: list[JobStatus | None]
    ) -> int:
        where = f"region {s.region} is down ({s.region_reason})"
        async with UnitOfWork(self._pool) as uow:
            ws = await uow.worksets.get(s.workset_id, for_update=True)
            if not _unmoved(ws, s) or not await uow.step_runs.lock_steps_unchanged(ws.id, ws.attempt, steps):
                return 0  # it moved on, or a step ended or started, while its jobs were stopped: next pass
            if steps:
                for step, status in zip(steps, outcomes, strict=True):
                    if status is not None and status.state is JobState.SUCCEEDED:
                        # It finished just before it was stopped: keep the result like the monitor would.
                        await uow.step_runs.finish_step_run(step.id, status)
                        ws.event(StepCompleted(step=step.step, attempt=ws.attempt))
                        continue
                    await uow.step_runs.mark_step_lost(
                        step.id,
                        f"{where} for {s.down_seconds:.0f}s (over {self._lost_after:g}s): the job is marked lost "
                        f"and the workset retried elsewhere"
                        + ("; it was stopped" if status is not None else "; the cluster did not answer, so it "
                           "could not be stopped (if it still runs, it runs unwatched)"),
                    )  # fmt: skip
                lost = [st.step for st, status in zip(steps, outcomes, strict=True)
                        if status is None or status.state is not JobState.SUCCEEDED]  # fmt: skip
                reason = (
                    f"{where} for {s.down_seconds:.0f}s: step {', '.join(lost)} on {s.cluster} marked lost; "
                    f"retried elsewhere from its last completed step"
                ) if lost else f"{where}: re-routed from {s.cluster} after its running step finished"  # fmt: skip
                outcome = "lost" if lost else "rerouted"
            else:
                reason = f"{where}: re-routed from {s.cluster} before its next step started"
                outcome = "rerouted"
            ws.transition(
                S.QUEUED,
                actor=self._holder,
                reason=reason,
                event=WorksetQueued(priority=ws.priority, attempt=ws.attempt + 1),
            )
            await uow.worksets.save(ws)
            await uow.slots.release_lease(ws.id, ws.attempt, outcome)
            await uow.commit()
        log.warning(
            "scheduler.evacuated", workset_id=ws.id, region=s.region, cluster=s.cluster, reason=reason
        )
        return 1

    async def _stop_and_look(self, cluster: ClusterRecord, step: ActiveStep) -> JobStatus | None:
        """Cancel the job and read how it ended; None when the cluster cannot be asked (or too slowly)."""
        if step.handle is None:
            return None  # never got a job handle: nothing that can be stopped from here
        executor = self._executors.for_cluster(cluster)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        try:
            await asyncio.wait_for(executor.cancel(step.handle), STOP_TIMEOUT_SECONDS)
            while time.monotonic() < deadline:
                status = (await asyncio.wait_for(executor.poll([step.handle]), STOP_TIMEOUT_SECONDS)).get(
                    step.handle.job_id
                )
                if status is not None and status.state.finished:
                    return status
                await asyncio.sleep(0.2)
        except Exception as exc:
            log.warning(
                "scheduler.evacuation_stop_failed", cluster=cluster.name, step=step.step, error=str(exc)
            )
        return None
