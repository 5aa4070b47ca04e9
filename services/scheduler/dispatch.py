"""Dispatch: start the next step of each admitted workset; finish worksets with no steps left.

A step is recorded before it is submitted, so no job can run without a record:

1. one short transaction claims the workset, plans it and commits a `step_runs` row in state
   `submitting`, taking the step run's lock (a session advisory lock) before it commits, so the row
   is never visible unlocked;
2. the executor is called outside any transaction, on the same connection, which keeps the lock:
   other replicas leave the row alone for as long as its submitter is alive, however long the
   cluster takes, and no row lock or open transaction waits on the network;
3. a second short transaction on that connection stores the job handle (`running`) and moves the
   workset on, or records the executor's refusal, and gives the lock back.

Two transactions per step, no more: the lock costs none of its own.

A crash between 1 and the commit of 3 leaves a `submitting` row whose lock went with its submitter's
connection. The next pass of
any replica reconciles it (`reconcile_submitting`) without ever running the step twice: it asks the
executor to `find` the job of exactly this submission (the Slurm job name, the local runner's job
file: both name the workset, the attempt and the step). A job found is adopted: its handle is
stored, the row becomes `running` and the monitor follows the job to its end as if nothing had
happened. The reconciler works the same way: it holds the step run's lock while it asks the
cluster (no row lock, no transaction open) and records what it found in a short transaction that
checks the row did not change meanwhile. When the executor says no job exists, the step is submitted again in the same row and
attempt (see `_resubmit` for why that is safe). When the executor cannot be asked (cluster
unreachable), the row is left for a later pass: "cannot tell" is never taken for "not found".

A retry resumes at the first step without a successful run on the same cluster (partial retry):
completed steps are looked up in step_runs, never run twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
import structlog

from services.scheduler.executors import ExecutorRegistry
from services.scheduler.planning import StepPlanner, WorksetPlans
from stamen.domain.lifecycle import WorksetState
from stamen.domain.steps import StepRunState, StepSpec
from stamen.domain.workset import Workset
from stamen.events.types import StepStarted, WorksetCancelled, WorksetCompleted, WorksetFailed, WorksetStarted
from stamen.executors.base import Executor, JobHandle, JobState, JobStatus
from stamen.executors.hints import find_and_stop_by_hand
from stamen.store.actuals import ActualsRepository
from stamen.store.clusters import ClusterRecord, no_such_cluster
from stamen.store.db import Connection, released_session_state
from stamen.store.dispatch_facts import DispatchFacts, dispatch_facts
from stamen.store.errors import ConcurrencyConflict
from stamen.store.outbox import OutboxWriter
from stamen.store.slots import SlotLedger
from stamen.store.step_runs import (
    StartedStep,
    SubmissionClaim,
    SubmittingStepRun,
    record_running_step_submission,
    record_running_step_submissions,
    recording_claimed_submission,
    step_run_locks,
    storing_claimed_submission,
    submission_lock,
)
from stamen.store.unit_of_work import UnitOfWork
from stamen.store.worksets import SavedWith, WorksetRepository
from stamen.tenancy.buckets import location_findings

log = structlog.get_logger(__name__)
S = WorksetState

__all__ = ["Dispatcher", "StepPlanner"]  # StepPlanner: as it was imported from here
MAX_DURATION_ACTOR = "scheduler:max-duration"
# A row taken over from a dead submitter is committed before its new submitter locks it
# (`submission_lock`): an instant in which it is unlocked; only rows older than this are taken as orphaned.
SUBMIT_GRACE_SECONDS = 10.0
# A submitter that died may have left its submission in flight: an sbatch it started keeps running
# (over SSH too) and may still create the job after the submitter is gone, for up to the Slurm
# executor's command timeout (60 s). "No job found" proves nothing before that, so an orphaned row
# is submitted again only once it is older than this; a job found is adopted at once.
RESUBMIT_AFTER_SECONDS = 120.0
LOST_STATE = "LOST"
# workset.failed's native_state when the tenant may not use a bucket its spec names (diagnosed WS-CFG-014).
S3_ACCESS_STATE = "S3_ACCESS"


class Reconciled(StrEnum):
    """What `reconcile_submitting` did with one orphaned `submitting` row."""

    ADOPTED = "adopted"  # the executor found the job: its handle is stored, the monitor follows it
    RESUBMITTED = "resubmitted"  # no job exists: the row is taken over and submitted again, same attempt
    CANCELLED = "cancelled"  # no job exists and the workset was asked to stop: nothing is submitted
    LOST = "lost"  # the job cannot be looked up (cluster removed, step no longer planned)
    DEFERRED = "deferred"  # cannot tell yet (executor unreachable, or too early): left for a later pass


@dataclass(frozen=True)
class OrphanTarget:
    """Where an orphaned submission went: its cluster, that cluster's executor and the step as planned."""

    cluster: ClusterRecord
    executor: Executor
    step: StepSpec


@dataclass(frozen=True)
class Submission:
    claim: SubmissionClaim
    workset_id: str
    cluster: ClusterRecord
    step: StepSpec
    how: str = "submitted"  # for the workset's history
    # The workset as the transaction that recorded the step committed it: `_record_submitted` stores the
    # job handle with the workset's change in one statement (none when it runs already: the step run and
    # the events change; its first step: the workset moves to running if it did not change meanwhile).
    committed: Workset | None = None


@dataclass(frozen=True)
class Settlement:
    """What reconciling one orphan came to; `resubmit` is submitted after the settlement commits."""

    outcome: Reconciled
    detail: str
    resubmit: Submission | None = None


@dataclass(frozen=True)
class Found:
    """What a reconciler learnt of an orphan before recording it: where its job would be (None: it cannot
    be looked up), the job found (None: no job), and whether that job was stopped."""

    target: OrphanTarget | None
    head: str  # what happened, for the reasons recorded
    handle: JobHandle | None = None
    cancelled: bool = False


def _current(ws: Workset, orphan: SubmittingStepRun) -> bool:
    return ws.attempt == orphan.attempt and ws.state in (S.SCHEDULED, S.RUNNING)


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        executors: ExecutorRegistry,
        planner: StepPlanner,
        holder: str,
        *,
        submit_grace_seconds: float = SUBMIT_GRACE_SECONDS,
        resubmit_after_seconds: float = RESUBMIT_AFTER_SECONDS,
    ) -> None:
        self._pool = pool
        self._executors = executors
        self._planner = planner
        self._plans = WorksetPlans(planner)  # each workset's spec walked and planned once, not per step
        self._holder = holder
        self._submit_grace_seconds = submit_grace_seconds
        self._resubmit_after_seconds = max(resubmit_after_seconds, submit_grace_seconds)

    @property
    def submit_grace_seconds(self) -> float:
        return self._submit_grace_seconds

    async def dispatch_pending(self, *, reconcile: bool = True, limit: int | None = None) -> int:
        """Returns how many worksets moved on (a step submitted, or completed/failed/cancelled).
        `reconcile`: look for orphaned submissions first (the pass's survey says whether there are any);
        `limit`: claim at most this many worksets (else until a claim finds none)."""
        dispatched = await self.reconcile_submitting() if reconcile else 0
        claims = 0
        while limit is None or claims < limit:
            claims += 1
            # One connection for the claim and the submission: the step run's lock is taken in the claim's
            # transaction and held across the executor's call, the outcome recorded on the same session.
            async with self._pool.acquire() as conn:
                async with UnitOfWork.on(conn) as uow:
                    claimed = await uow.step_runs.claim_undispatched(limit=1)
                    if not claimed:
                        return dispatched
                    ws = await uow.worksets.get(claimed[0], for_update=True)
                    # The claim's NOT EXISTS saw its statement's snapshot: a step another replica's monitor
                    # or admission committed between that snapshot and the row lock is visible only now.
                    if not await uow.step_runs.dispatchable(ws.id):
                        await uow.commit()
                        continue
                    submission = await self.prepare(uow, ws)  # holds the step run's lock
                    await uow.commit()
                if submission is not None:
                    await self.submit_holding(conn, submission)
            dispatched += 1
        return dispatched

    async def prepare(
        self,
        uow: UnitOfWork,
        ws: Workset,
        *,
        changed: bool = False,
        if_dispatchable: bool = False,
        along: Sequence[SavedWith] = (),
        facts: DispatchFacts | None = None,
    ) -> Submission | None:
        """Finish the workset, or record its next step as `submitting` and return what to submit: the step
        run's lock is then held by the unit of work's session (taken with the row), for its caller to
        submit on that connection after the commit (`submit_holding`).

        What it reads (the tenant's buckets, the cluster, the steps done and their resources) is one
        statement (`dispatch_facts`). The workset is saved here when this changes it, and also when
        `changed` (its caller changed it: an event, a transition), so that one statement saves both, and
        writes what goes with the save: the next step's row, or the slot given back and the actuals, and
        `along` (its caller's: admission's lease). `if_dispatchable`: only if the dispatcher's claim would
        take it now (asked in the same statement); else nothing but that save. `facts`: read by its caller
        (admission, with the workset: `workset_and_facts`), not read again."""
        if facts is None:
            facts = await dispatch_facts(
                uow.connection, ws.id, ws.tenant_id, ws.cluster or "", ask_dispatchable=if_dispatchable
            )
        if if_dispatchable and not facts.dispatchable:
            if changed:
                await uow.worksets.save(ws, *along)
            return None
        assert ws.cluster is not None
        if ws.cancel_requested_by:
            finish_cancelled(ws, self._holder)
            await save_releasing(uow, ws, "cancelled", along)
            return None
        # Defence in depth: the spec was checked at intake, but a grant may have been revoked since, or the
        # row changed after validation. A step never starts on a bucket its tenant may not use.
        refused = location_findings(self._plans.locations(ws), facts.rights)
        if refused:
            reason = f"{S3_ACCESS_STATE}: " + "; ".join(f"{f.code} {f.message}" for f in refused[:5])
            await self._fail(uow, ws, None, reason, native_state=S3_ACCESS_STATE, along=along)
            log.warning(
                "scheduler.bucket_access_refused", workset_id=ws.id, fields=[f.field for f in refused]
            )
            return None
        if facts.cluster is None:
            raise no_such_cluster(ws.cluster)
        cluster = facts.cluster
        try:
            plan = self._plans.plan(ws, cluster)
        except Exception as exc:  # an unknown pipeline or a spec the planner cannot use
            await self._fail(uow, ws, None, f"cannot plan the pipeline: {exc}", along=along)
            return None
        # Steps done on another cluster count too when their outputs were exported to S3 (a workset
        # moved out of a lost region resumes after them); others' local outputs are not here.
        done, elsewhere = facts.done_here, facts.done_anywhere
        reused = {
            s.step: elsewhere[s.step]
            for s in plan
            if s.exported and s.step in elsewhere and s.step not in done
        }
        done |= set(reused)
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
            if along:  # a lease taken by this same save is given back by a statement of its own
                await save_releasing(uow, ws, "completed", along)
                await uow.actuals.record_from_steps(ws.id)
            else:  # the save, the slot given back and the actuals: one statement
                await uow.worksets.save(
                    ws,
                    SlotLedger.releasing(ws.id, ws.attempt, "completed"),
                    ActualsRepository.recording(ws.id, facts.costs),
                )
            self._plans.forget(ws.id)
            log.info("scheduler.completed", workset_id=ws.id, attempt=ws.attempt)
            return None
        index, step = remaining[0]
        how = "submitted" + (
            "; reused exported outputs of " + ", ".join(f"{n} (from {c})" for n, c in sorted(reused.items()))
            if reused else ""
        )  # fmt: skip
        if changed:  # the step's row (and its lock) written by the workset's save
            saved = await uow.worksets.save(
                ws,
                *along,
                uow.step_runs.recording_submitting(
                    workset_id=ws.id,
                    attempt=ws.attempt,
                    step=step.step,
                    step_index=index,
                    cluster=cluster.name,
                    holder=self._holder,
                ),
            )
            claim = SubmissionClaim.returned(saved, self._holder)
        else:
            claim = await uow.step_runs.record_submitting(
                workset_id=ws.id,
                attempt=ws.attempt,
                step=step.step,
                step_index=index,
                cluster=cluster.name,
                holder=self._holder,
                hold_lock=True,
            )
        return Submission(claim, ws.id, cluster, step, how, ws)

    async def _submit(self, sub: Submission) -> None:
        """Submit a row taken over from a dead submitter (its lock taken here, after the takeover's commit)."""
        async with submission_lock(self._pool, sub.claim) as held:
            if not held:
                # Another replica took the row as orphaned (this process stalled past the grace
                # period) and settled or took it over: submitting now would run the step twice.
                log.warning("scheduler.submission_reconciled_meanwhile", workset_id=sub.workset_id)
                return
            await self.submit_holding(None, sub)

    async def submit_holding(self, conn: Connection | None, sub: Submission) -> None:
        """Call the executor while the step run's lock is held, and record what it said: on `conn`, the
        session that holds the lock (which the recording transaction gives back), else on a pooled one."""
        try:
            handle = await self._executors.for_cluster(sub.cluster).submit(sub.step)
        except Exception as exc:
            await self._record_refusal(sub, f"{sub.cluster.executor} executor refused the step: {exc}", conn)
            return
        await self._record_submitted(sub, handle, conn)

    async def submit_all_holding(self, conn: Connection, subs: Sequence[Submission]) -> None:
        """`submit_holding` for several submissions whose step run locks `conn` holds (the steps a monitor's
        transaction recorded after the ends of their previous steps): each submitted while the locks are
        held, then the handles of those whose workset runs already stored, their locks given back and
        their `workset.step_started` written, in one statement (not one each). The others (a refusal, a
        first step, a claim gone meanwhile) are recorded one by one, as `submit_holding` records them; the
        session is then reset by its pool, which gives back any lock still held."""
        stored: list[tuple[Submission, JobHandle]] = []
        alone: list[tuple[Submission, JobHandle | str]] = []
        for sub in subs:
            try:
                handle = await self._executors.for_cluster(sub.cluster).submit(sub.step)
            except Exception as exc:
                alone.append((sub, f"{sub.cluster.executor} executor refused the step: {exc}"))
                continue
            running = sub.committed is not None and sub.committed.state is S.RUNNING
            (stored if running else alone).append((sub, handle))
        recorded = await record_running_step_submissions(
            conn,
            [
                StartedStep(
                    sub.claim,
                    handle,
                    [sub.committed.envelope(StepStarted(step=sub.step.step, attempt=sub.committed.attempt))],
                )
                for sub, handle in stored
                if sub.committed is not None
            ],
        )
        for sub, handle in stored:
            if sub.claim.step_run_id in recorded:
                log.info(
                    "scheduler.step_submitted",
                    workset_id=sub.workset_id, step=sub.step.step, job_id=handle.job_id,
                )  # fmt: skip
            else:  # the claim no longer holds: the full path says so
                alone.append((sub, handle))
        for sub, outcome in alone:
            if isinstance(outcome, str):
                await self._record_refusal(sub, outcome, conn, sole_lock=False)
            else:
                await self._record_submitted(sub, outcome, conn, sole_lock=False)
        if not alone:
            released_session_state(conn)  # every lock given back by the statement: no reset on release

    def _unit_of_work(self, conn: Connection | None) -> UnitOfWork:
        return UnitOfWork(self._pool) if conn is None else UnitOfWork.on(conn)

    @staticmethod
    def _stored_alone(conn: Connection, sub: Submission, handle: JobHandle, sole_lock: bool) -> None:
        """A handle stored by one statement outside a transaction: nothing is left in the session (unless
        the session held more locks than this step run's: `sole_lock` False)."""
        if sole_lock:
            released_session_state(conn)  # no reset on release
        log.info(
            "scheduler.step_submitted", workset_id=sub.workset_id, step=sub.step.step, job_id=handle.job_id
        )

    async def _record_submitted(
        self, sub: Submission, handle: JobHandle, conn: Connection | None, *, sole_lock: bool = True
    ) -> None:
        """`sole_lock`: the step run's lock is all `conn`'s session holds (else the session is left for its
        pool to reset when it is released)."""
        if conn is not None and sub.committed is not None and sub.committed.state is S.SCHEDULED:
            # Its first step: the handle, the lock given back, the workset's move to running and its events in
            # one statement (it was BEGIN, the handle with the workset's read, its save, COMMIT), if the
            # workset did not change since it was committed (its version) and the claim holds; else the
            # full path below reads it again.
            first = sub.committed
            self._started(first, sub.cluster.name, sub.step.step, sub.how)
            try:
                stored = await WorksetRepository(conn, [], OutboxWriter(conn)).save(
                    first, storing_claimed_submission(sub.claim, handle)
                )
            except ConcurrencyConflict:
                stored = None  # changed meanwhile (a cancel asked), or the claim is gone: nothing written
            if stored is not None and stored["stored"] is not None:
                first.pending_events.clear()  # committed with the statement
                self._stored_alone(conn, sub, handle, sole_lock)
                return
        elif conn is not None and sub.committed is not None and sub.committed.state is S.RUNNING:
            # A later step of a running workset: the handle, the lock given back and workset.step_started
            # in one statement (it was BEGIN, the handle with the workset's read, its save, COMMIT). The
            # workset's row is not read or written: nothing in it changes.
            running = sub.committed
            started = running.envelope(StepStarted(step=sub.step.step, attempt=running.attempt))
            if await record_running_step_submission(conn, sub.claim, handle, [started]):
                self._stored_alone(conn, sub, handle, sole_lock)
                return
            # The claim no longer holds (see below): the statement did nothing, the full path says so.
        async with self._unit_of_work(conn) as uow:
            # The handle stored and the workset read and locked in one statement; on the submitting
            # session, the step run's lock is given back by that statement too.
            ws = await uow.worksets.get_changed(
                recording_claimed_submission(sub.claim, handle, release_lock=conn is not None)
            )
            if ws is None:
                # Only if the submission lock went with a broken connection and another replica adopted
                # the job it found by name meanwhile (or, past resubmit_after_seconds, took the row over).
                log.warning(
                    "scheduler.submission_recorded_meanwhile",
                    workset_id=sub.workset_id, step=sub.step.step, job_id=handle.job_id,
                )  # fmt: skip
                return
            self._started(ws, sub.cluster.name, sub.step.step, sub.how)
            await uow.worksets.save(ws)
            await uow.commit()
            if conn is not None and sole_lock:
                released_session_state(conn)  # nothing left in the session: no reset on release
        log.info("scheduler.step_submitted", workset_id=ws.id, step=sub.step.step, job_id=handle.job_id)

    async def _record_refusal(
        self, sub: Submission, reason: str, conn: Connection | None, *, sole_lock: bool = True
    ) -> None:
        async with self._unit_of_work(conn) as uow:
            if not await uow.step_runs.lock_submitting(sub.claim):
                log.warning(
                    "scheduler.submission_recorded_meanwhile", workset_id=sub.workset_id, reason=reason
                )
                return
            await uow.step_runs.end_unsubmitted(sub.claim.step_run_id, StepRunState.FAILED, reason)
            ws = await uow.worksets.get(sub.workset_id, for_update=True)
            await self._fail(uow, ws, sub.step.step, reason)
            await self._commit_releasing(uow, sub, conn, sole_lock)

    @staticmethod
    async def _commit_releasing(
        uow: UnitOfWork, sub: Submission, conn: Connection | None, sole_lock: bool = True
    ) -> None:
        """Commit the outcome; on the submitting session, give the step run's lock back in the same
        transaction (the row lock taken by lock_submitting covers the moment before the commit).
        `sole_lock`: as in `_record_submitted`."""
        if conn is not None:
            await uow.step_runs.release_submission_lock(sub.claim)
        await uow.commit()
        if conn is not None and sole_lock:
            released_session_state(conn)  # nothing left in the session: no reset on release

    def _started(self, ws: Workset, cluster: str, step: str, how: str) -> None:
        """The step's job exists and is stored: the workset runs (if this is its first step)."""
        if ws.state is S.SCHEDULED:
            ws.transition(
                S.RUNNING,
                actor=self._holder,
                reason=f"first step {step} {how}",
                event=WorksetStarted(cluster=cluster, attempt=ws.attempt),
            )
        ws.event(StepStarted(step=step, attempt=ws.attempt))

    async def reconcile_submitting(self) -> int:
        """Settle the steps whose submitter died between recording them and storing their job handle.

        Returns how many were settled. Rows are taken oldest first; one that cannot be settled yet
        (DEFERRED), or that someone else holds, is left as it was and skipped for the rest of the pass,
        so one unreachable cluster does not hold up the others' orphans."""
        reconciled = 0
        looked_at: list[int] = []
        while True:
            async with UnitOfWork(self._pool) as uow:
                stale = await uow.step_runs.stale_submissions(self._submit_grace_seconds, skip=looked_at)
            if not stale:
                return reconciled
            looked_at.append(stale[0])
            settled = await self._reconcile(stale[0])
            if settled is None:
                continue  # its submitter (or another replica) holds it, or it was settled meanwhile
            if settled.outcome is Reconciled.DEFERRED:
                log.info(
                    "scheduler.submission_reconcile_deferred", step_run_id=stale[0], reason=settled.detail
                )
                continue
            reconciled += 1
            log.warning(
                f"scheduler.submission_{settled.outcome.value}", step_run_id=stale[0], detail=settled.detail
            )
            if settled.resubmit is not None:  # after the step run's lock is released: _submit takes it
                await self._submit(settled.resubmit)

    async def _reconcile(self, step_run_id: int) -> Settlement | None:
        """Like a submission, in three steps: under the step run's lock (no transaction open) the orphan
        is read, the cluster asked for its job (and, for a job of an attempt that has moved on, told to
        stop it), then what was found is recorded in a short transaction that checks the row has not
        changed meanwhile. None when the row is someone else's or already settled."""
        async with step_run_locks(self._pool, [step_run_id]) as held:
            if not held:
                return None
            async with UnitOfWork(self._pool) as uow:
                orphan = await uow.step_runs.stale_submission(step_run_id, self._submit_grace_seconds)
                if orphan is None:
                    return None
                ws = await uow.worksets.get(orphan.workset_id)
                target = await self._orphan_target(uow, ws, orphan)
            who = orphan.submitted_by or "a scheduler"
            head = (
                f"step {orphan.step} of attempt {orphan.attempt}: {who} stopped after recording the step and "
                f"before storing its job handle"
            )
            if isinstance(target, str):
                found = Found(None, f"{head}, and stamen cannot look the job up: {target}")
            else:
                try:
                    found = Found(target, head, await target.executor.find(target.step))
                except Exception as exc:  # the cluster did not answer: ask again at the next pass
                    return Settlement(
                        Reconciled.DEFERRED, f"cannot ask cluster {target.cluster.name} for the job: {exc}"
                    )
                if found.handle is not None and not _current(ws, orphan):
                    # The workset has moved on without this job (it never comes back to this attempt):
                    # stop it, since the monitor would take its end for the current attempt's outcome.
                    try:
                        await target.executor.cancel(found.handle)
                    except Exception as exc:
                        return Settlement(Reconciled.DEFERRED,
                                          f"job {found.handle.job_id} runs for nothing but cannot be cancelled: {exc}")  # fmt: skip
                    found = Found(target, head, found.handle, cancelled=True)
            return await self._record_found(orphan, found)

    async def _record_found(self, orphan: SubmittingStepRun, found: Found) -> Settlement | None:
        async with UnitOfWork(self._pool) as uow:
            if not await uow.step_runs.lock_orphan(orphan):
                return None  # settled or taken over meanwhile
            ws = await uow.worksets.get(orphan.workset_id, for_update=True)
            current = _current(ws, orphan)
            if found.target is None:
                settled = await self._give_up(uow, ws, orphan, current, found.head)
            elif found.handle is not None:
                if not current and not found.cancelled:  # it moved on while the cluster was asked
                    return Settlement(Reconciled.DEFERRED, "the workset moved on while its job was looked up")
                settled = await self._adopt(uow, ws, orphan, found.target, found.handle, current, found.head)
            elif not current:  # the workset has moved on: there is nothing left to submit
                reason = f"{found.head}; no job was started and the workset is no longer in attempt {orphan.attempt}"
                await uow.step_runs.end_unsubmitted(orphan.id, StepRunState.LOST, reason)
                settled = Settlement(Reconciled.LOST, reason)
            elif ws.cancel_requested_by:
                reason = f"{found.head}; no job was started and the workset was asked to stop"
                await uow.step_runs.end_unsubmitted(orphan.id, StepRunState.CANCELLED, reason)
                finish_cancelled(ws, self._holder)
                await uow.worksets.save(ws)
                await uow.slots.release_lease(ws.id, ws.attempt, "cancelled")
                settled = Settlement(Reconciled.CANCELLED, reason)
            else:
                settled = await self._resubmit(uow, ws, orphan, found.target, found.head)
            if settled.outcome is not Reconciled.DEFERRED:
                await uow.commit()
            return settled

    async def _orphan_target(
        self, uow: UnitOfWork, ws: Workset, orphan: SubmittingStepRun
    ) -> OrphanTarget | str:
        """The orphan's cluster, executor and step as it was planned; or why they cannot be had."""
        try:
            cluster = await uow.clusters.cluster(orphan.cluster)
            executor = self._executors.for_cluster(cluster)
            step = next(s for s in self._planner(ws, cluster) if s.step == orphan.step)
        except StopIteration:
            return f"the pipeline no longer has a step {orphan.step}"
        except Exception as exc:  # cluster removed, unknown executor, a plan that no longer works
            return f"{type(exc).__name__}: {exc}"
        # The plan is made for the workset's current attempt; the job was submitted in the orphan's.
        return OrphanTarget(cluster, executor, step.model_copy(update={"attempt": orphan.attempt}))

    async def _adopt(
        self, uow: UnitOfWork, ws: Workset, orphan: SubmittingStepRun, target: OrphanTarget,
        handle: JobHandle, current: bool, head: str,
    ) -> Settlement:  # fmt: skip
        await uow.step_runs.record_submitted(orphan.id, handle)
        detail = f"{head}; job {handle.job_id} was found on cluster {target.cluster.name} and adopted"
        if current:
            # The submitter's StepStarted/WorksetStarted were rolled back with it: they go out now.
            # A cancel requested meanwhile is carried out by the monitor, on the adopted job.
            self._started(ws, target.cluster.name, orphan.step, "found after its submitter stopped")
            await uow.worksets.save(ws)
            return Settlement(Reconciled.ADOPTED, detail)
        # The workset moved on without this job, which was stopped (it would be taken for the current
        # attempt's outcome): recorded as ended here.
        reason = f"{detail}, then cancelled: the workset is no longer in attempt {orphan.attempt}"
        await uow.step_runs.finish_step_run(
            orphan.id,
            JobStatus(handle=handle, state=JobState.CANCELLED, native_state="CANCELLED", reason=reason),
        )
        return Settlement(Reconciled.ADOPTED, reason)

    async def _resubmit(
        self, uow: UnitOfWork, ws: Workset, orphan: SubmittingStepRun, target: OrphanTarget, head: str
    ) -> Settlement:
        """Submit the step again, in the same row and attempt: nothing ran, so nothing is retried.

        Safe because (1) this reconciler holds the step run's lock, and a live submitter holds it for
        as long as it submits, so nobody else is submitting this step, and a submitter that has not
        taken the lock yet finds the row no longer its own and submits nothing; (2) the executor said
        no job of this attempt of this step exists, and (3) the row is older than
        `resubmit_after_seconds`, so no submission the dead submitter left in flight can still
        create one. The row is then restarted as this scheduler's (its clock too) and committed, and
        submitted exactly like a first dispatch: if this process dies during that submission, the
        next pass waits `resubmit_after_seconds` from the restart before it looks, so a submission
        this process left in flight has landed (and is adopted) or never will.
        """
        age = orphan.age_seconds  # the database's clock, like the grace period's
        if age < self._resubmit_after_seconds:
            return Settlement(Reconciled.DEFERRED, (
                f"no job found yet; a submission in flight could still create one, so the step is "
                f"submitted again only {self._resubmit_after_seconds:g}s after it was recorded ({age:.0f}s ago)"
            ))  # fmt: skip
        claim = await uow.step_runs.restart_submitting(orphan.id, self._holder)
        submission = Submission(
            claim, ws.id, target.cluster, target.step, how="submitted again after its submitter stopped"
        )
        return Settlement(
            Reconciled.RESUBMITTED, f"{head}; no job was found, so it is submitted again", submission
        )

    async def _give_up(
        self, uow: UnitOfWork, ws: Workset, orphan: SubmittingStepRun, current: bool, head: str
    ) -> Settlement:
        """The job cannot be looked up: the step is `lost` and the attempt failed (LOST: transient), as
        running it again blind could run it twice. The reason says what to look for by hand."""
        kind = await self._cluster_kind(uow, orphan.cluster)
        where = find_and_stop_by_hand(kind, orphan.workset_id, orphan.attempt, orphan.step)
        reason = (
            f"{head}. If the job was started, it runs unwatched: {where}. The attempt is failed so the "
            "retry policy decides; a retry is a new attempt"
        )
        await uow.step_runs.end_unsubmitted(orphan.id, StepRunState.LOST, reason)
        if current:
            if ws.cancel_requested_by:
                finish_cancelled(ws, self._holder)
                await uow.worksets.save(ws)
                await uow.slots.release_lease(ws.id, ws.attempt, "cancelled")
            else:
                await self._fail(uow, ws, orphan.step, reason, native_state=LOST_STATE)
        return Settlement(Reconciled.LOST, reason)

    @staticmethod
    async def _cluster_kind(uow: UnitOfWork, name: str) -> str:
        try:
            return (await uow.clusters.cluster(name)).executor
        except Exception:  # the cluster was removed: the hint stays generic
            return ""

    async def _fail(
        self,
        uow: UnitOfWork,
        ws: Workset,
        step: str | None,
        reason: str,
        *,
        native_state: str = "",
        along: Sequence[SavedWith] = (),
    ) -> None:
        ws.transition(
            S.FAILED,
            actor=self._holder,
            reason=reason,
            event=WorksetFailed(attempt=ws.attempt, step=step, reason=reason, native_state=native_state),
        )
        await save_releasing(uow, ws, "failed", along)


async def save_releasing(uow: UnitOfWork, ws: Workset, outcome: str, along: Sequence[SavedWith] = ()) -> None:
    """Save the workset that ended (`outcome`) and give its slot back, in one statement; with `along` (a
    lease taken by the same save: admission's) the lease is given back by a statement of its own, which
    sees it (a statement does not see what its own parts insert)."""
    if along:
        await uow.worksets.save(ws, *along)
        await uow.slots.release_lease(ws.id, ws.attempt, outcome)
    else:
        await uow.worksets.save(ws, SlotLedger.releasing(ws.id, ws.attempt, outcome))


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
                reason=f"stamen: {reason}; the job was stopped (max duration exceeded)",
                native_state="MAX_DURATION",
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
