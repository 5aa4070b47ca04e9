"""Dispatch: start the next step of each admitted workset; finish worksets with no steps left.

A step is recorded before it is submitted, so no job can run without a record:

1. one transaction claims the workset, plans it and commits a `step_runs` row in state `submitting`;
2. a second transaction locks that row, calls the executor, stores the job handle (`running`) and
   moves the workset on. The lock is held while the executor runs, so other replicas leave the row
   alone while its submitter is alive.

A crash between 1 and the commit of 2 leaves a `submitting` row that nobody holds. The next pass of
any replica reconciles it (`reconcile_submitting`): the executors cannot look a job up by its name
yet, so stamen cannot tell whether it was submitted; the step is marked `lost` and the attempt fails
with native state LOST and a reason saying what to look for, and the retry policy decides.

A retry resumes at the first step without a successful run on the same cluster (partial retry):
completed steps are looked up in step_runs, never run twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

from services.scheduler.executors import ExecutorRegistry
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.types import StepStarted, WorksetCancelled, WorksetCompleted, WorksetFailed, WorksetStarted
from stamen.executors.base import StepSpec
from stamen.executors.slurm import job_name
from stamen.store.scheduling import ClusterRecord, SubmittingStepRun
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
S = WorksetState

StepPlanner = Callable[[Workset, ClusterRecord], list[StepSpec]]
MAX_DURATION_ACTOR = "scheduler:max-duration"
# Between the commit of a `submitting` row and its submitter taking the row's lock there is an
# instant in which the row is unlocked; only rows older than this are taken as orphaned.
SUBMIT_GRACE_SECONDS = 10.0
LOST_STATE = "LOST"


@dataclass(frozen=True)
class Submission:
    step_run_id: int
    workset_id: str
    cluster: ClusterRecord
    step: StepSpec


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        executors: ExecutorRegistry,
        planner: StepPlanner,
        holder: str,
        *,
        submit_grace_seconds: float = SUBMIT_GRACE_SECONDS,
    ) -> None:
        self._pool = pool
        self._executors = executors
        self._planner = planner
        self._holder = holder
        self._submit_grace_seconds = submit_grace_seconds

    async def dispatch_pending(self) -> int:
        """Returns how many worksets moved on (a step submitted, or completed/failed/cancelled)."""
        dispatched = await self.reconcile_submitting()
        while True:
            async with UnitOfWork(self._pool) as uow:
                claimed = await uow.scheduling.claim_undispatched(limit=1)
                if not claimed:
                    return dispatched
                ws = await uow.worksets.get(claimed[0], for_update=True)
                submission = await self._prepare(uow, ws)
                await uow.commit()
            if submission is not None:
                await self._submit(submission)
            dispatched += 1

    async def _prepare(self, uow: UnitOfWork, ws: Workset) -> Submission | None:
        """Finish the workset, or record its next step as `submitting` and return what to submit."""
        assert ws.cluster is not None
        if ws.cancel_requested_by:
            finish_cancelled(ws, self._holder)
            await uow.worksets.save(ws)
            await uow.scheduling.release_lease(ws.id, ws.attempt, "cancelled")
            return None
        cluster = await uow.scheduling.cluster(ws.cluster)
        try:
            plan = self._planner(ws, cluster)
        except Exception as exc:  # an unknown pipeline or a spec the planner cannot use
            await self._fail(uow, ws, None, f"cannot plan the pipeline: {exc}")
            return None
        done = await uow.scheduling.completed_steps(ws.id, cluster.name)
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
            return None
        index, step = remaining[0]
        step_run_id = await uow.scheduling.record_submitting(
            workset_id=ws.id,
            attempt=ws.attempt,
            step=step.step,
            step_index=index,
            cluster=cluster.name,
            holder=self._holder,
        )
        return Submission(step_run_id, ws.id, cluster, step)

    async def _submit(self, sub: Submission) -> None:
        async with UnitOfWork(self._pool) as uow:
            if not await uow.scheduling.lock_submitting(sub.step_run_id):
                # Another replica took the row as orphaned (this process stalled past the grace
                # period) and failed the attempt: submitting now would run a job nobody watches.
                log.warning("scheduler.submission_reconciled_meanwhile", workset_id=sub.workset_id)
                return
            step = sub.step
            try:
                handle = await self._executors.for_cluster(sub.cluster).submit(step)
            except Exception as exc:
                reason = f"{sub.cluster.executor} executor refused the step: {exc}"
                await uow.scheduling.end_unsubmitted(sub.step_run_id, "failed", reason)
                ws = await uow.worksets.get(sub.workset_id, for_update=True)
                await self._fail(uow, ws, step.step, reason)
                await uow.commit()
                return
            await uow.scheduling.record_submitted(sub.step_run_id, handle)
            ws = await uow.worksets.get(sub.workset_id, for_update=True)
            if ws.state is S.SCHEDULED:
                ws.transition(
                    S.RUNNING,
                    actor=self._holder,
                    reason=f"first step {step.step} submitted",
                    event=WorksetStarted(cluster=sub.cluster.name, attempt=ws.attempt),
                )
            ws.event(StepStarted(step=step.step, attempt=ws.attempt))
            await uow.worksets.save(ws)
            await uow.commit()
        log.info("scheduler.step_submitted", workset_id=ws.id, step=step.step, job_id=handle.job_id)

    async def reconcile_submitting(self) -> int:
        """Fail the attempts whose submitter died between recording a step and storing its handle."""
        reconciled = 0
        while True:
            async with UnitOfWork(self._pool) as uow:
                orphan = await uow.scheduling.claim_stale_submission(self._submit_grace_seconds)
                if orphan is None:
                    return reconciled
                ws = await uow.worksets.get(orphan.workset_id, for_update=True)
                reason = await self._orphan_reason(uow, ws, orphan)
                await uow.scheduling.end_unsubmitted(orphan.id, "lost", reason)
                if ws.attempt == orphan.attempt and ws.state in (S.SCHEDULED, S.RUNNING):
                    if ws.cancel_requested_by:
                        finish_cancelled(ws, self._holder)
                        await uow.worksets.save(ws)
                        await uow.scheduling.release_lease(ws.id, ws.attempt, "cancelled")
                    else:
                        await self._fail(uow, ws, orphan.step, reason, native_state=LOST_STATE)
                await uow.commit()
            reconciled += 1
            log.warning(
                "scheduler.submission_lost", workset_id=orphan.workset_id, step=orphan.step, reason=reason
            )

    async def _orphan_reason(self, uow: UnitOfWork, ws: Workset, orphan: SubmittingStepRun) -> str:
        who = orphan.submitted_by or "a scheduler"
        head = (
            f"step {orphan.step} of attempt {orphan.attempt}: {who} stopped after recording the step and "
            f"before storing its job handle, so stamen cannot tell whether the job was started on cluster "
            f"{orphan.cluster}"
        )
        try:
            cluster = await uow.scheduling.cluster(orphan.cluster)
            step = next(s for s in self._planner(ws, cluster) if s.step == orphan.step)
        except Exception:  # cluster removed, pipeline changed: the plan was only needed for the hint
            return f"{head}; the attempt is failed so the retry policy decides"
        where = (
            f"look for Slurm job name {job_name(step)} (squeue/sacct) and scancel it"
            if cluster.executor == "slurm"
            else f"look for a process running in {step.workdir} and kill it"
        )
        return (
            f"{head}. If it was, it runs unwatched: {where}. The attempt is failed so the retry policy "
            "decides; a retry is a new attempt"
        )

    async def _fail(
        self, uow: UnitOfWork, ws: Workset, step: str | None, reason: str, *, native_state: str = ""
    ) -> None:
        ws.transition(
            S.FAILED,
            actor=self._holder,
            reason=reason,
            event=WorksetFailed(
                attempt=ws.attempt, step=step, reason=reason, log_tail=reason, native_state=native_state
            ),
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
            # Not Slurm's TIMEOUT (a step's own time limit, retried with more resources): the
            # workset's configured limit was reached, which running it again does not change.
            event=WorksetFailed(
                attempt=ws.attempt,
                reason=reason,
                native_state="MAX_DURATION",
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
