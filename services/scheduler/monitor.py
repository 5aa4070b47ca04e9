"""Monitor: one poll per cluster per interval; finished steps are recorded, failures reported.

Any replica may poll; the row lock (SKIP LOCKED) makes exactly one of them record each outcome. A
replica records its own jobs at once and others' only a few seconds after they ended, so replicas do
not all try (and all but one fail) to record the same end.
Jobs are found from the store, so a restarted scheduler re-attaches to running jobs, never re-runs them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import structlog

from services.scheduler.dispatch import (
    LOST_STATE,
    MAX_DURATION_ACTOR,
    Dispatcher,
    Submission,
    finish_cancelled,
    save_releasing,
)
from services.scheduler.executors import ExecutorRegistry
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.types import StepCompleted, WorksetFailed
from stamen.executors.base import JobState, JobStatus
from stamen.store.clusters import ClusterRecord
from stamen.store.db import is_unreachable
from stamen.store.dispatch_facts import DispatchFacts, ended_step_and_facts, ended_steps_and_facts
from stamen.store.step_runs import StepRunRow, finishing_active_step_run, finishing_active_step_runs
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)
S = WorksetState
# A job another scheduler submitted is left to it this long after it ended (then any replica records
# it: the submitter may have died).
OTHERS_JOBS_AFTER_SECONDS = 5.0


class JobMonitor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        executors: ExecutorRegistry,
        holder: str,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        """`dispatcher`: starts a workset's next step in the transaction that records the last one's
        success (without it, the dispatcher's next pass does)."""
        self._pool = pool
        self._executors = executors
        self._holder = holder
        self._dispatcher = dispatcher

    async def poll_once(
        self, active_steps: tuple[list[ClusterRecord], dict[str, list[StepRunRow]]] | None = None
    ) -> int:
        """Returns how many steps finished. `active_steps`: the clusters and their pending/running steps
        as the pass's survey read them; read here when not given."""
        if active_steps is None:
            async with UnitOfWork(self._pool) as uow:
                clusters = await uow.clusters.clusters()
                active = {c.name: await uow.step_runs.active_step_runs(c.name) for c in clusters}
        else:
            clusters, active = active_steps
        ended: list[tuple[StepRunRow, JobStatus]] = []
        now = datetime.now(UTC)
        for cluster in clusters:
            # Another scheduler's step that started less than OTHERS_JOBS_AFTER_SECONDS ago cannot have
            # ended that long ago: not this replica's to record yet (`_records`), so its job is not asked
            # about (each pass asked about every step the other schedulers ran, for nothing).
            rows = [
                r
                for r in active.get(cluster.name, [])
                if self._own(r) or _age(r.started_at, now) >= OTHERS_JOBS_AFTER_SECONDS
            ]
            if not rows:
                continue
            executor = self._executors.for_cluster(cluster)
            try:
                statuses = await executor.poll([r.handle for r in rows])
            except Exception as exc:  # the cluster did not answer: keep the jobs, try next interval
                log.warning("scheduler.poll_failed", cluster=cluster.name, error=str(exc))
                continue
            for row in rows:
                status = statuses.get(row.handle.job_id)
                if status is not None and status.state.finished and self._records(row, status):
                    ended.append((row, status))
        finished = 0
        while ended:
            batch, ended = one_per_workset(ended)
            finished += await self._record_all(batch)
        return finished

    def _records(self, row: StepRunRow, status: JobStatus) -> bool:
        """Whether this replica records the end of this job now: its own jobs at once; another
        scheduler's once they ended OTHERS_JOBS_AFTER_SECONDS ago (that scheduler, woken by the exit,
        records them first; replicas that all tried spent a transaction each failing to)."""
        if self._own(row) or status.ended_at is None:
            return True
        return _age(status.ended_at, datetime.now(UTC)) >= OTHERS_JOBS_AFTER_SECONDS

    def _own(self, row: StepRunRow) -> bool:
        return row.submitted_by in (None, self._holder)

    async def _record_all(self, ended: list[tuple[StepRunRow, JobStatus]]) -> int:
        """Record the ends of jobs of different worksets in one transaction: their step runs finished and
        their worksets read and locked in one statement (a step run another replica is recording, or that
        evacuation holds, is skipped, never waited for), each outcome saved, one commit; then the next
        steps submitted and their handles stored in one statement. If that transaction fails (one
        outcome raised, a deadlock), nothing of it was recorded, and each end is recorded in a transaction
        of its own, so that one end that cannot be recorded does not hold up the others."""
        if len(ended) == 1:
            return await self._record_each(ended)
        submissions: list[Submission] = []
        recorded: list[tuple[StepRunRow, JobStatus]] = []
        failed = False
        async with self._pool.acquire() as conn:
            try:
                async with UnitOfWork.on(conn) as uow:
                    got = await ended_steps_and_facts(
                        uow.worksets, finishing_active_step_runs([(row.id, status) for row, status in ended])
                    )
                    for row, status in ended:
                        if row.id not in got:
                            continue  # another replica recorded it (or evacuation holds it)
                        ws, facts = got[row.id]
                        submission = await self._outcome(uow, ws, row, status, facts)
                        if submission is not None:
                            submissions.append(submission)
                        recorded.append((row, status))
                    await uow.commit()
            except Exception as exc:
                if is_unreachable(exc):
                    raise
                log.warning("scheduler.step_ends_recorded_one_by_one", ends=len(ended), error=str(exc))
                submissions, recorded, failed = [], [], True
            if submissions and self._dispatcher is not None:
                await self._dispatcher.submit_all_holding(conn, submissions)
        if failed:
            return await self._record_each(ended)
        for row, status in recorded:
            log.info(
                "scheduler.step_finished", workset_id=row.workset_id, step=row.step, state=status.state.value
            )
        return len(recorded)

    async def _record_each(self, ended: list[tuple[StepRunRow, JobStatus]]) -> int:
        """Each end in a transaction of its own: one that fails is logged and left for the next poll."""
        finished = 0
        for row, status in ended:
            try:
                finished += await self._record(row, status)
            except Exception as exc:
                if is_unreachable(exc):
                    raise
                log.exception(
                    "scheduler.step_end_not_recorded",
                    workset_id=row.workset_id,
                    step=row.step,
                    error=str(exc),
                )
        return finished

    async def _record(self, row: StepRunRow, status: JobStatus) -> int:
        async with self._pool.acquire() as conn:
            async with UnitOfWork.on(conn) as uow:
                # The end recorded and the workset read and locked: one statement, which also reads what the
                # dispatcher needs before it records the next step after a success.
                change = finishing_active_step_run(row.id, status)
                facts = None
                if status.state is JobState.SUCCEEDED and self._dispatcher is not None:
                    got = await ended_step_and_facts(uow.worksets, change)
                    ws, facts = got if got is not None else (None, None)
                else:
                    ws = await uow.worksets.get_changed(change)
                if ws is None:
                    return 0  # another replica recorded it (or evacuation holds it)
                submission = await self._outcome(uow, ws, row, status, facts)  # holds the step run's lock
                await uow.commit()
            if submission is not None and self._dispatcher is not None:
                await self._dispatcher.submit_holding(conn, submission)
        log.info(
            "scheduler.step_finished", workset_id=row.workset_id, step=row.step, state=status.state.value
        )
        return 1

    async def _outcome(
        self, uow: UnitOfWork, ws: Workset, row: StepRunRow, status: JobStatus, facts: DispatchFacts | None
    ) -> Submission | None:
        """What the job's end does to the workset, saved. A step that succeeded is followed, in the same
        transaction, by what the dispatcher would do at its next pass (the next step recorded for
        submission, or the workset completed), when the dispatcher's own claim would take it; the
        workset is then saved once, with both."""
        if status.state is JobState.SUCCEEDED:
            resources = {k: v for k, v in status.resources.model_dump().items() if v is not None}
            ws.event(StepCompleted(step=row.step, attempt=row.attempt, resources=resources))
            if self._dispatcher is not None:
                return await self._dispatcher.prepare(
                    uow, ws, changed=True, if_dispatchable=True, facts=facts
                )
        elif ws.cancel_requested_by and status.state is JobState.CANCELLED:
            finish_cancelled(ws, self._holder)
            await save_releasing(uow, ws, "cancelled")
            return None
        elif ws.state in (S.SCHEDULED, S.RUNNING):
            reason = status.reason or f"step {row.step} ended {status.state.value}"
            ws.transition(
                S.FAILED,
                actor=self._holder,
                reason=f"step {row.step}: {reason}",
                event=WorksetFailed(
                    attempt=row.attempt,
                    step=row.step,
                    exit_code=status.exit_code,
                    signal=status.signal,
                    native_state=native_state(status),
                    step_run_id=row.id,
                    reason=reason,
                ),
            )
            await save_releasing(uow, ws, "failed")
            return None
        await uow.worksets.save(ws)
        return None

    async def stop_requested(self) -> None:
        """Carry out cancel requests and the max-duration guard on running jobs."""
        async with UnitOfWork(self._pool) as uow:
            for ws_id in await uow.step_runs.overdue():
                ws = await uow.worksets.get(ws_id, for_update=True)
                ws.cancel_requested_by = MAX_DURATION_ACTOR
                await uow.worksets.save(ws)
            await uow.commit()
        async with UnitOfWork(self._pool) as uow:
            requests = await uow.step_runs.cancel_requested()
            targets = [(ws_id, await uow.step_runs.active_step_run_for(ws_id)) for ws_id, _ in requests]
            clusters = {c.name: c for c in await uow.clusters.clusters()}
        for ws_id, active in targets:
            if active is None:
                continue  # not started yet: the dispatcher finishes the cancel
            try:
                await self._executors.for_cluster(clusters[active.cluster]).cancel(active.handle)
            except Exception as exc:
                log.warning("scheduler.cancel_failed", workset_id=ws_id, error=str(exc))


def _age(at: datetime, now: datetime) -> float:
    """Seconds from `at` (naive: UTC) to `now`."""
    return (now - (at if at.tzinfo else at.replace(tzinfo=UTC))).total_seconds()


def one_per_workset(
    ended: list[tuple[StepRunRow, JobStatus]],
) -> tuple[list[tuple[StepRunRow, JobStatus]], list[tuple[StepRunRow, JobStatus]]]:
    """The ends to record together (the first end of each workset: one transaction saves each workset
    once) and the rest, for another transaction (two ends of one workset: a step of an attempt that moved
    on and one of the current attempt)."""
    batch: list[tuple[StepRunRow, JobStatus]] = []
    rest: list[tuple[StepRunRow, JobStatus]] = []
    seen: set[str] = set()
    for item in ended:
        (rest if item[0].workset_id in seen else batch).append(item)
        seen.add(item[0].workset_id)
    return batch, rest


def native_state(status: JobStatus) -> str:
    """What workset.failed reports as the executor's state. A vanished job is always LOST (the local
    executor says "lost", Slurm the last state it showed or "unknown"), so diagnostics sees one state;
    otherwise the executor's own words, or the state's name when it gave none."""
    if status.state is JobState.LOST:
        return LOST_STATE
    return status.native_state or status.state.value.upper()
