"""Dispatch: start the next step of each admitted workset; finish worksets with no steps left.

A retry resumes at the first step without a successful run (partial retry): completed steps are
looked up in step_runs, never run twice.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog

from services.scheduler.executors import ExecutorRegistry
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.types import StepStarted, WorksetCancelled, WorksetCompleted, WorksetFailed, WorksetStarted
from stamen.executors.base import StepSpec
from stamen.store.scheduling import ClusterRecord
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
S = WorksetState

StepPlanner = Callable[[Workset, ClusterRecord], list[StepSpec]]
MAX_DURATION_ACTOR = "scheduler:max-duration"


class Dispatcher:
    def __init__(
        self, pool: asyncpg.Pool, executors: ExecutorRegistry, planner: StepPlanner, holder: str
    ) -> None:
        self._pool = pool
        self._executors = executors
        self._planner = planner
        self._holder = holder

    async def dispatch_pending(self) -> int:
        dispatched = 0
        while True:
            async with UnitOfWork(self._pool) as uow:
                claimed = await uow.scheduling.claim_undispatched(limit=1)
                if not claimed:
                    return dispatched
                ws = await uow.worksets.get(claimed[0], for_update=True)
                await self._advance(uow, ws)
                await uow.commit()
            dispatched += 1

    async def _advance(self, uow: UnitOfWork, ws: Workset) -> None:
        assert ws.cluster is not None
        if ws.cancel_requested_by:
            finish_cancelled(ws, self._holder)
            await uow.worksets.save(ws)
            await uow.scheduling.release_lease(ws.id, ws.attempt, "cancelled")
            return
        cluster = await uow.scheduling.cluster(ws.cluster)
        try:
            plan = self._planner(ws, cluster)
        except Exception as exc:  # an unknown pipeline or a spec the planner cannot use
            await self._fail(uow, ws, None, f"cannot plan the pipeline: {exc}")
            return
        done = await uow.scheduling.completed_steps(ws.id)
        remaining = [(i, s) for i, s in enumerate(plan) if s.step not in done]
        if not remaining:
            if ws.state is S.SCHEDULED:
                ws.transition(S.RUNNING, actor=self._holder, reason="all steps already done")
            ws.transition(
                S.COMPLETED,
                actor=self._holder,
                reason=f"{len(plan)} steps succeeded",
                event=WorksetCompleted(attempt=ws.attempt),
            )
            await uow.worksets.save(ws)
            await uow.scheduling.release_lease(ws.id, ws.attempt, "completed")
            await uow.actuals.record_from_steps(ws.id)
            log.info("scheduler.completed", workset_id=ws.id, attempt=ws.attempt)
            return
        index, step = remaining[0]
        try:
            handle = await self._executors.for_cluster(cluster).submit(step)
        except Exception as exc:
            await self._fail(uow, ws, step.step, f"{cluster.executor} executor refused the step: {exc}")
            return
        await uow.scheduling.add_step_run(
            handle=handle, step_index=index, cluster=cluster.name, state="running"
        )
        if ws.state is S.SCHEDULED:
            ws.transition(
                S.RUNNING,
                actor=self._holder,
                reason=f"first step {step.step} submitted",
                event=WorksetStarted(cluster=cluster.name, attempt=ws.attempt),
            )
        ws.event(StepStarted(step=step.step, attempt=ws.attempt))
        await uow.worksets.save(ws)
        log.info("scheduler.step_submitted", workset_id=ws.id, step=step.step, job_id=handle.job_id)

    async def _fail(self, uow: UnitOfWork, ws: Workset, step: str | None, reason: str) -> None:
        ws.transition(
            S.FAILED,
            actor=self._holder,
            reason=reason,
            event=WorksetFailed(attempt=ws.attempt, step=step, reason=reason, log_tail=reason),
        )
        await uow.worksets.save(ws)
        await uow.scheduling.release_lease(ws.id, ws.attempt, "failed")


def finish_cancelled(ws: Workset, holder: str) -> None:
    """A cancel the scheduler carried out: by a person (cancelled) or by the max-duration guard (failed)."""
    by = ws.cancel_requested_by or holder
    if by == MAX_DURATION_ACTOR:
        reason = f"ran longer than its max duration of {ws.max_duration_seconds}s"
        ws.transition(
            S.FAILED,
            actor=holder,
            reason=reason,
            event=WorksetFailed(
                attempt=ws.attempt,
                reason=reason,
                native_state="TIMEOUT",
                log_tail=f"stamen: {reason}; the job was stopped (max duration exceeded)",
            ),
        )
    else:
        ws.transition(
            S.CANCELLED,
            actor=by,
            reason="cancelled while running",
            event=WorksetCancelled(cancelled_by=by, reason="cancel requested"),
        )
    ws.cancel_requested_by = None
