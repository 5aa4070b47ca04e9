"""Step runs (the `step_runs` table): recorded before submission, then the job's handle and end; and
the dispatcher's and the monitor's questions about them (what to dispatch, what is active, what is
stranded in a region that is down, what was asked to stop)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from stamen.domain.steps import StepRunState
from stamen.events.envelope import Envelope
from stamen.executors.base import JobHandle, JobStatus
from stamen.store.db import Connection, keeps_session_state
from stamen.store.outbox import OutboxWriter, outbox_cte
from stamen.store.worksets import SavedWith, WorksetChange

log = structlog.get_logger(__name__)
# The step run's advisory lock (class, step run id): whoever talks to the cluster about a step run
# holds it at session level, with no transaction open, for as long as the network call takes: its
# submitter (the executor submits), a reconciler (it looks the job up by name, may cancel it) and
# evacuation (it cancels the job and polls how it ended). Each of them, and the monitor recording a
# job's end, leaves a step run whose lock someone else holds alone. It goes with its connection: a
# submitter that dies releases it, and its row is then an orphan to reconcile by job name.
STEP_RUN_LOCK_CLASS = 0x53544D53
_STEP_RUN_KEY = "($2::bigint % 2147483647)::int"


@dataclass(frozen=True)
class StepRunRow:
    id: int
    workset_id: str
    attempt: int
    step: str
    step_index: int
    cluster: str
    state: StepRunState
    handle: JobHandle
    started_at: datetime
    submitted_by: str | None = None  # the scheduler that submitted (or took over) the job


@dataclass(frozen=True)
class SubmittingStepRun:
    """A step run recorded before its submission; no job handle yet."""

    id: int
    workset_id: str
    attempt: int
    step: str
    step_index: int
    cluster: str
    submitted_by: str | None
    started_at: datetime
    age_seconds: float  # by the database's clock, as every other age here


@dataclass(frozen=True)
class SubmissionClaim:
    """Who may submit a 'submitting' row: its holder, as of when it became theirs. A takeover changes
    both, so a submitter that stalled past a takeover finds its claim gone and submits nothing."""

    step_run_id: int
    holder: str
    since: datetime

    @classmethod
    def returned(cls, row: asyncpg.Record | None, holder: str) -> SubmissionClaim:
        """The claim of a row recorded by `StepRunRepository.recording_submitting`, from the save's row."""
        assert row is not None and row["submitting_id"] is not None, "the save returns the row it recorded"
        return cls(int(row["submitting_id"]), holder, row["submitting_since"])


@dataclass(frozen=True)
class StrandedWorkset:
    """An admitted workset whose cluster's region is down."""

    workset_id: str
    attempt: int
    cluster: str
    region: str
    region_reason: str
    down_seconds: float
    active: bool  # a step of this attempt is submitting or running there


@dataclass(frozen=True)
class ActiveStep:
    id: int
    step: str
    state: StepRunState
    handle: JobHandle | None  # None while 'submitting'


def step_run_from_row(r: Any) -> StepRunRow:
    return StepRunRow(
        id=r["id"],
        workset_id=r["workset_id"],
        attempt=r["attempt"],
        step=r["step"],
        step_index=r["step_index"],
        cluster=r["cluster"],
        state=StepRunState(r["state"]),
        handle=JobHandle.model_validate_json(r["handle"]),
        started_at=r["started_at"],
        submitted_by=r["submitted_by"],
    )


# The scheduler's questions, as FROM … WHERE clauses: asked one at a time by the parts that act on the
# answers, and all at once (whether each has any answer) by the tick's survey (stamen.store.survey).
# Scheduled or running worksets with no step submitting or running: newly admitted, or whose last step
# has ended. Nothing new starts in a region that is down while another can take the work: the
# evacuation moves those worksets (stamen.domain.regions.regions_to_avoid).
# Whether the workset `w`'s region is to be avoided: down, while another can take the work.
REGION_AVOIDED = """(EXISTS (SELECT 1 FROM clusters c JOIN region_health h ON h.region = c.region
                     WHERE c.name = w.cluster AND h.status = 'down')
             AND EXISTS (SELECT 1 FROM clusters o LEFT JOIN region_health oh ON oh.region = o.region
                         WHERE o.status = 'active' AND oh.status IS DISTINCT FROM 'down'))"""
UNDISPATCHED_FROM = f"""FROM worksets w
    WHERE w.state IN ('scheduled', 'running') AND NOT EXISTS (
        SELECT 1 FROM step_runs s WHERE s.workset_id = w.id AND s.attempt = w.attempt
        AND s.state IN ('submitting', 'pending', 'running'))
    AND NOT {REGION_AVOIDED}"""
# Admitted worksets whose cluster's region is down, only while another region can take the work.
STRANDED_FROM = """FROM worksets w JOIN clusters c ON c.name = w.cluster
    JOIN region_health h ON h.region = c.region AND h.status = 'down'
    WHERE w.state IN ('scheduled', 'running')
      AND EXISTS (SELECT 1 FROM clusters o LEFT JOIN region_health oh ON oh.region = o.region
                  WHERE o.status = 'active' AND oh.status IS DISTINCT FROM 'down')"""
CANCEL_REQUESTED_FROM = """FROM worksets
    WHERE cancel_requested_by IS NOT NULL AND state IN ('scheduled', 'running')"""
OVERDUE_FROM = """FROM worksets w JOIN workset_runs r ON r.workset_id = w.id AND r.attempt = w.attempt
    WHERE w.state IN ('scheduled', 'running') AND w.cancel_requested_by IS NULL
      AND w.max_duration_seconds IS NOT NULL
      AND r.admitted_at + make_interval(secs => w.max_duration_seconds) < now()"""
# A workset's succeeded steps, in the order `succeeded_where` takes them; $1: the workset.
SUCCEEDED_FROM = "FROM step_runs WHERE workset_id = $1 AND state = 'succeeded' ORDER BY step, id"
# $1: the grace period in seconds.
STALE_SUBMITTING_FROM = """FROM step_runs
    WHERE state = 'submitting' AND started_at < clock_timestamp() - make_interval(secs => $1)"""


class StepRunRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- what to dispatch, what is stranded -----------------------------------------------------

    async def claim_undispatched(self, limit: int = 20) -> list[str]:
        """Scheduled worksets with no step running or being submitted: newly admitted, or whose last
        step has ended."""
        rows = await self._conn.fetch(
            f"SELECT w.id {UNDISPATCHED_FROM} ORDER BY w.updated_at LIMIT $1 FOR UPDATE OF w SKIP LOCKED",
            limit,
        )
        return [r["id"] for r in rows]

    async def dispatchable(self, workset_id: str) -> bool:
        """Whether the dispatcher's claim would take this workset now (no step active, its region not to
        be avoided): asked by the monitor, which holds its row, before it starts the next step itself."""
        return bool(
            await self._conn.fetchval(
                f"SELECT EXISTS (SELECT 1 {UNDISPATCHED_FROM} AND w.id = $1)", workset_id
            )
        )

    async def succeeded_steps(self, workset_id: str, cluster: str) -> tuple[set[str], dict[str, str]]:
        """The workset's succeeded steps, read once: those that succeeded on `cluster` in any attempt (each
        cluster has its own workdir_root, so another cluster's outputs are not where this one's steps look
        for them), and every succeeded step with the cluster of its first success (with outputs exported
        to S3, they count as done wherever the workset runs next; the dispatcher checks which export)."""
        rows = await self._conn.fetch(f"SELECT step, cluster {SUCCEEDED_FROM}", workset_id)
        return succeeded_where([(r["step"], r["cluster"]) for r in rows], cluster)

    async def worksets_in_down_regions(self) -> list[StrandedWorkset]:
        """Admitted worksets whose cluster is in a region that is down (while another region can take the
        work), with how long it has been down and whether a job of the current attempt is (or may be)
        running there."""
        rows = await self._conn.fetch(
            f"""SELECT w.id, w.attempt, w.cluster, c.region, h.reason,
                      extract(epoch FROM clock_timestamp() - h.changed_at) AS down_seconds,
                      EXISTS (SELECT 1 FROM step_runs s WHERE s.workset_id = w.id AND s.attempt = w.attempt
                              AND s.state IN ('submitting', 'pending', 'running')) AS active
               {STRANDED_FROM} ORDER BY w.id"""
        )
        return [
            StrandedWorkset(
                r["id"],
                r["attempt"],
                r["cluster"],
                r["region"],
                r["reason"],
                float(r["down_seconds"]),
                r["active"],
            )
            for r in rows
        ]

    async def cancel_requested(self) -> list[tuple[str, str]]:
        rows = await self._conn.fetch(f"SELECT id, cancel_requested_by {CANCEL_REQUESTED_FROM}")
        return [(r["id"], r["cancel_requested_by"]) for r in rows]

    async def overdue(self) -> list[str]:
        """Running worksets past their max duration that have not been asked to stop yet."""
        rows = await self._conn.fetch(f"SELECT w.id {OVERDUE_FROM}")
        return [r["id"] for r in rows]

    # -- submission -----------------------------------------------------------------------------

    async def record_submitting(
        self,
        *,
        workset_id: str,
        attempt: int,
        step: str,
        step_index: int,
        cluster: str,
        holder: str,
        hold_lock: bool = False,
    ) -> SubmissionClaim:
        """The step run, committed before the executor is called (its handle follows).

        `hold_lock`: the same statement takes the step run's lock at session level, in the transaction
        that records the row: held from the moment anyone can see the row, so no reconciler can take it
        for an orphan, and kept after the commit while the caller, on this same connection, submits.
        Given back by `record_claimed_submission` or `release_submission_lock` (or, if the caller fails
        first, by the pool's reset on release, or with the session if the process dies). Nobody else can
        hold the lock of a row not yet inserted, so taking it never waits."""
        lock = ", pg_advisory_lock($7, (id % 2147483647)::int)" if hold_lock else ""
        if hold_lock:
            keeps_session_state(self._conn)
        row = await self._conn.fetchrow(
            f"""INSERT INTO step_runs (workset_id, attempt, step, step_index, cluster, state, submitted_by,
                                      started_at)
               VALUES ($1, $2, $3, $4, $5, 'submitting', $6, clock_timestamp()) RETURNING id, started_at{lock}""",
            workset_id,
            attempt,
            step,
            step_index,
            cluster,
            holder,
            *([STEP_RUN_LOCK_CLASS] if hold_lock else []),
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return SubmissionClaim(int(row["id"]), holder, row["started_at"])

    def recording_submitting(
        self, *, workset_id: str, attempt: int, step: str, step_index: int, cluster: str, holder: str
    ) -> SavedWith:
        """`record_submitting(hold_lock=True)` written by the statement that saves the workset (one round
        trip fewer): the row inserted, and the step run's lock taken, only if the save goes through. The
        save returns the row: `SubmissionClaim.returned` reads the claim from it."""
        keeps_session_state(self._conn)
        return SavedWith(
            """submitting AS (
                 INSERT INTO step_runs (workset_id, attempt, step, step_index, cluster, state, submitted_by,
                                        started_at)
                 SELECT $1, $2, $3, $4, $5, 'submitting', $6, clock_timestamp() WHERE EXISTS (SELECT 1 FROM updated)
                 RETURNING id AS submitting_id, started_at AS submitting_since,
                           pg_advisory_lock($7, (id % 2147483647)::int))""",
            (workset_id, attempt, step, step_index, cluster, holder, STEP_RUN_LOCK_CLASS),
            returns="submitting",
        )

    async def release_submission_lock(self, claim: SubmissionClaim) -> None:
        """Give the lock back in the transaction that records the submission's outcome, after
        `lock_submitting`: the row lock then keeps a reconciler or evacuation that takes the step run's
        lock before this commit from acting on it (theirs re-read the row under FOR UPDATE and find it
        no longer 'submitting'), so the unlock costs no transaction of its own."""
        await self._conn.execute(
            f"SELECT pg_advisory_unlock($1, {_STEP_RUN_KEY})", STEP_RUN_LOCK_CLASS, claim.step_run_id
        )

    async def lock_submitting(self, claim: SubmissionClaim) -> bool:
        """Lock the row to record its submission's outcome. False if the claim no longer holds (the row
        was reconciled, or taken over, meanwhile): then nothing may be recorded."""
        row = await self._conn.fetchrow(
            """SELECT id FROM step_runs
               WHERE id = $1 AND state = 'submitting' AND submitted_by = $2 AND started_at = $3
               FOR UPDATE""",
            claim.step_run_id,
            claim.holder,
            claim.since,
        )
        return row is not None

    async def record_claimed_submission(
        self, claim: SubmissionClaim, handle: JobHandle, *, release_lock: bool
    ) -> bool:
        """Store the job handle of the claim's submission (the row becomes 'running') in one statement,
        if the claim still holds; False if it does not (the row was reconciled, or taken over,
        meanwhile): then nothing is recorded. `release_lock`: as in `recording_claimed_submission`."""
        change = recording_claimed_submission(claim, handle, release_lock=release_lock)
        return await self._conn.fetchrow(change.sql, *change.args) is not None

    async def restart_submitting(self, step_run_id: int, holder: str) -> SubmissionClaim:
        """An orphaned 'submitting' row taken over to be submitted again: it becomes `holder`'s, and its
        clock restarts, so that a later reconciler waits from now before it decides no job exists."""
        since = await self._conn.fetchval(
            """UPDATE step_runs SET submitted_by = $2, started_at = clock_timestamp()
               WHERE id = $1 AND state = 'submitting' RETURNING started_at""",
            step_run_id,
            holder,
        )
        return SubmissionClaim(step_run_id, holder, since)

    async def record_submitted(self, step_run_id: int, handle: JobHandle) -> None:
        await self._conn.execute(
            "UPDATE step_runs SET state = 'running', handle = $2::jsonb WHERE id = $1 AND state = 'submitting'",
            step_run_id,
            handle.model_dump_json(),
        )

    async def end_unsubmitted(self, step_run_id: int, state: StepRunState, reason: str) -> None:
        """A step run that never got a job handle: refused by the executor (failed) or orphaned (lost)."""
        await self._conn.execute(
            """UPDATE step_runs SET state = $2, reason = $3, log_tail = $3, ended_at = clock_timestamp()
               WHERE id = $1 AND state = 'submitting'""",
            step_run_id,
            state,
            reason,
        )

    async def stale_submissions(self, older_than_seconds: float, *, skip: Sequence[int] = ()) -> list[int]:
        """The 'submitting' rows older than the grace period (which covers the moment between the commit
        of the row and its submitter taking the step run's lock), oldest first; nothing is locked. `skip`:
        rows already looked at in this pass, so one that cannot be settled does not hide the others."""
        rows = await self._conn.fetch(
            f"SELECT id {STALE_SUBMITTING_FROM} AND id <> ALL($2::bigint[]) ORDER BY started_at",
            older_than_seconds,
            list(skip),
        )
        return [r["id"] for r in rows]

    async def stale_submission(self, step_run_id: int, older_than_seconds: float) -> SubmittingStepRun | None:
        """The row, if it is still 'submitting' and older than the grace period: read (not locked) by a
        reconciler that holds the step run's lock, so nobody is submitting it meanwhile."""
        row = await self._conn.fetchrow(
            """SELECT *, extract(epoch FROM clock_timestamp() - started_at)::float8 AS age_seconds
               FROM step_runs WHERE id = $1 AND state = 'submitting'
                 AND started_at < clock_timestamp() - make_interval(secs => $2)""",
            step_run_id,
            older_than_seconds,
        )
        if row is None:
            return None
        return SubmittingStepRun(
            id=row["id"],
            workset_id=row["workset_id"],
            attempt=row["attempt"],
            step=row["step"],
            step_index=row["step_index"],
            cluster=row["cluster"],
            submitted_by=row["submitted_by"],
            started_at=row["started_at"],
            age_seconds=row["age_seconds"],
        )

    async def lock_orphan(self, orphan: SubmittingStepRun) -> bool:
        """Lock the orphan's row to record what its reconciler found. False if it changed since it was
        read (settled, or taken over): then nothing may be recorded."""
        row = await self._conn.fetchrow(
            """SELECT id FROM step_runs WHERE id = $1 AND state = 'submitting'
                 AND submitted_by IS NOT DISTINCT FROM $2 AND started_at = $3 FOR UPDATE""",
            orphan.id,
            orphan.submitted_by,
            orphan.started_at,
        )
        return row is not None

    # -- running and ended ----------------------------------------------------------------------

    async def active_steps(self, workset_id: str, attempt: int) -> list[ActiveStep]:
        """The attempt's steps that are submitting or running; nothing is locked (evacuation reads them
        holding their step run locks, and checks them again with `lock_steps_unchanged`)."""
        rows = await self._conn.fetch(
            """SELECT id, step, state, handle FROM step_runs
               WHERE workset_id = $1 AND attempt = $2 AND state IN ('submitting', 'pending', 'running')
               ORDER BY id""",
            workset_id,
            attempt,
        )
        return [
            ActiveStep(r["id"], r["step"], StepRunState(r["state"]), JobHandle.model_validate_json(r["handle"]) if r["handle"] else None)
            for r in rows
        ]  # fmt: skip

    async def lock_steps_unchanged(self, workset_id: str, attempt: int, steps: Sequence[ActiveStep]) -> bool:
        """Lock the attempt's active steps to record what became of them: False if they are no longer
        exactly `steps` in the same states (one ended, or a new one was submitted, meanwhile)."""
        rows = await self._conn.fetch(
            """SELECT id, state FROM step_runs
               WHERE workset_id = $1 AND attempt = $2 AND state IN ('submitting', 'pending', 'running')
               ORDER BY id FOR UPDATE""",
            workset_id,
            attempt,
        )
        return [(r["id"], r["state"]) for r in rows] == [(st.id, st.state) for st in steps]

    async def mark_step_lost(self, step_run_id: int, reason: str) -> None:
        await self._conn.execute(
            """UPDATE step_runs SET state = 'lost', reason = $2, log_tail = $2, ended_at = clock_timestamp()
               WHERE id = $1 AND state IN ('submitting', 'pending', 'running')""",
            step_run_id,
            reason,
        )

    async def active_step_runs(self, cluster: str) -> list[StepRunRow]:
        rows = await self._conn.fetch(
            "SELECT * FROM step_runs WHERE cluster = $1 AND state IN ('pending', 'running') ORDER BY id",
            cluster,
        )
        return [step_run_from_row(r) for r in rows]

    async def finish_active_step_run(self, step_run_id: int, status: JobStatus) -> bool:
        """Record how the running step ended (the monitor); False, recording nothing, if it is no longer
        active or someone holds its step run lock (see `finishing_active_step_run`)."""
        change = finishing_active_step_run(step_run_id, status)
        return await self._conn.fetchrow(change.sql, *change.args) is not None

    async def finish_step_run(self, step_run_id: int, status: JobStatus) -> None:
        await self._conn.execute(
            """UPDATE step_runs SET state = $2, exit_code = $3, signal = $4, reason = $5, log_tail = $6,
                      resources = $7::jsonb, ended_at = coalesce($8, now())
               WHERE id = $1""",
            *_ended(step_run_id, status),
        )

    async def log_tail(self, workset_id: str, step_run_id: int) -> str | None:
        """A finished step's log tail (what workset.failed points at), None when there is no such run."""
        value = await self._conn.fetchval(
            "SELECT log_tail FROM step_runs WHERE id = $1 AND workset_id = $2", step_run_id, workset_id
        )
        return None if value is None else str(value)

    async def mark_step_running(self, step_run_id: int) -> None:
        await self._conn.execute(
            "UPDATE step_runs SET state = 'running' WHERE id = $1 AND state = 'pending'", step_run_id
        )

    async def step_run_counts(self, workset_id: str) -> dict[str, int]:
        rows = await self._conn.fetch(
            "SELECT step, count(*) AS n FROM step_runs WHERE workset_id = $1 GROUP BY step", workset_id
        )
        return {r["step"]: r["n"] for r in rows}

    async def active_step_run_for(self, workset_id: str) -> StepRunRow | None:
        row = await self._conn.fetchrow(
            """SELECT * FROM step_runs WHERE workset_id = $1 AND state IN ('pending', 'running')
               ORDER BY id DESC LIMIT 1""",
            workset_id,
        )
        return step_run_from_row(row) if row else None


def _ended(step_run_id: int, status: JobStatus) -> tuple[Any, ...]:
    return (
        step_run_id,
        status.state.value,
        status.exit_code,
        status.signal,
        status.reason,
        status.log_tail[-8000:],
        status.resources.model_dump_json(),
        status.ended_at,
    )


def succeeded_where(succeeded: Sequence[tuple[str, str]], cluster: str) -> tuple[set[str], dict[str, str]]:
    """From a workset's succeeded (step, cluster) pairs (SUCCEEDED_FROM's order): the steps that succeeded on
    `cluster`, and every succeeded step with the cluster of its first success."""
    here: set[str] = set()
    anywhere: dict[str, str] = {}
    for step, where in succeeded:
        anywhere.setdefault(step, where)
        if where == cluster:
            here.add(step)
    return here, anywhere


# Changes the monitor and a submitter make to a step run, each followed by reading and locking its workset
# (`WorksetRepository.get_changed`: one statement for both).


def finishing_active_step_run(step_run_id: int, status: JobStatus) -> WorksetChange:
    """How the running step ended (the monitor), if it is still active and nobody holds its step run lock:
    another replica recording it, or evacuation stopping its job (which records how it ended itself).
    The step run's lock (for the rest of the transaction) is tried first, by a subquery PostgreSQL runs
    once before it reads the row, so a row whose lock is held is never waited for; the row is then
    updated (and locked) only if it was taken. No row: nothing recorded."""
    return WorksetChange(
        """UPDATE step_runs SET state = $2, exit_code = $3, signal = $4, reason = $5, log_tail = $6,
                  resources = $7::jsonb, ended_at = coalesce($8, now())
           WHERE id = $1 AND state IN ('pending', 'running')
             AND (SELECT pg_try_advisory_xact_lock($9, ($1::bigint % 2147483647)::int))
           RETURNING workset_id, id, step, cluster, state, attempt, resources""",
        (*_ended(step_run_id, status), STEP_RUN_LOCK_CLASS),
    )


def finishing_active_step_runs(ended: Sequence[tuple[int, JobStatus]]) -> WorksetChange:
    """`finishing_active_step_run` for several step runs at once (the ends a monitor's poll found), one
    statement: each is recorded only if it is still active and its step run lock was taken (tried, never
    waited for, on these step runs alone: the MATERIALIZED list is computed before any row is read), the
    others are left as they are and return no row. `WorksetRepository.get_changed_all_with` reads their
    worksets with it."""
    columns = [list(c) for c in zip(*(_ended(i, s) for i, s in ended), strict=True)]
    return WorksetChange(
        """WITH taken AS MATERIALIZED (
             SELECT e.* FROM unnest($1::bigint[], $2::text[], $3::int[], $4::int[], $5::text[], $6::text[],
                                    $7::text[], $8::timestamptz[])
                  AS e (id, state, exit_code, signal, reason, log_tail, resources, ended_at)
             WHERE pg_try_advisory_xact_lock($9, (e.id % 2147483647)::int))
           UPDATE step_runs s SET state = e.state, exit_code = e.exit_code, signal = e.signal, reason = e.reason,
                  log_tail = e.log_tail, resources = e.resources::jsonb, ended_at = coalesce(e.ended_at, now())
           FROM taken e
           WHERE s.id = e.id AND s.state IN ('pending', 'running')
           RETURNING s.workset_id, s.id, s.step, s.cluster, s.state, s.attempt, s.resources""",
        (*(columns or [[] for _ in range(8)]), STEP_RUN_LOCK_CLASS),
    )


def recording_claimed_submission(
    claim: SubmissionClaim, handle: JobHandle, *, release_lock: bool
) -> WorksetChange:
    """The job handle of the claim's submission (the row becomes 'running'), if the claim still holds; no
    row if it does not (the row was reconciled, or taken over, meanwhile): then nothing is recorded.
    `release_lock`: this session holds the step run's lock (`record_submitting(hold_lock=True)`) and gives
    it back in the same statement; the UPDATE's row lock then keeps a reconciler or evacuation that takes
    the step run's lock before this commit from acting on it (theirs re-read the row under FOR UPDATE and
    find it no longer 'submitting'). It replaces `lock_submitting`, `record_submitted` and
    `release_submission_lock`: one round trip, not three."""
    unlock = ", pg_advisory_unlock($5, (id % 2147483647)::int)" if release_lock else ""
    return WorksetChange(
        f"""UPDATE step_runs SET state = 'running', handle = $4::jsonb
            WHERE id = $1 AND state = 'submitting' AND submitted_by = $2 AND started_at = $3
            RETURNING workset_id{unlock}""",
        (claim.step_run_id, claim.holder, claim.since, handle.model_dump_json(),
         *([STEP_RUN_LOCK_CLASS] if release_lock else [])),
    )  # fmt: skip


def storing_claimed_submission(claim: SubmissionClaim, handle: JobHandle) -> SavedWith:
    """`recording_claimed_submission(release_lock=True)` written by the statement that saves the workset
    (its first step started: it moves to `running`), so that the handle, the lock given back, the workset's
    save and its events are one statement, outside BEGIN ... COMMIT. The claim's row is locked first (the
    order of `get_changed`: the step run's row, then the workset's), and the save changes nothing unless the
    claim holds; the handle is stored only if the save goes through (its version check: the workset did not
    change since its caller committed it). The save returns `stored` (no row: nothing was stored)."""
    return SavedWith(
        """stored AS (
             UPDATE step_runs SET state = 'running', handle = $4::jsonb
             WHERE id IN (SELECT id FROM claimed) AND EXISTS (SELECT 1 FROM updated)
             RETURNING id AS stored, pg_advisory_unlock($5, (id % 2147483647)::int) AS unlocked)""",
        (claim.step_run_id, claim.holder, claim.since, handle.model_dump_json(), STEP_RUN_LOCK_CLASS),
        returns="stored",
        before="""claimed AS (
             SELECT id FROM step_runs
             WHERE id = $1 AND state = 'submitting' AND submitted_by = $2 AND started_at = $3 FOR UPDATE)""",
        requires="claimed",
    )


async def record_running_step_submission(
    conn: Connection, claim: SubmissionClaim, handle: JobHandle, events: Sequence[Envelope]
) -> bool:
    """The job handle of the claim's submission stored, the step run's lock given back (this session
    holds it: `record_submitting(hold_lock=True)`) and `events` written to the outbox, in one statement
    and so one transaction (no BEGIN or COMMIT of its own), if the claim still holds; False, and nothing
    done, if it does not. For a step of a workset already running: its start changes nothing in the
    workset's row, only the step run and the events (`workset.step_started`) do. As in
    `recording_claimed_submission`, the UPDATE's row lock keeps a reconciler or evacuation that takes the
    step run's lock before the commit from acting on it."""
    change = recording_claimed_submission(claim, handle, release_lock=True)
    first = len(change.args) + 1
    changed = await conn.fetchval(
        f"WITH changed AS ({change.sql}), {outbox_cte(first, if_exists='changed')} SELECT count(*) FROM changed",
        *change.args,
        *OutboxWriter.columns(events),
    )
    return bool(changed)


@dataclass(frozen=True)
class StartedStep:
    """A submitted step of a running workset: its claim, its job's handle and the events its start
    writes (`workset.step_started`)."""

    claim: SubmissionClaim
    handle: JobHandle
    events: Sequence[Envelope]


async def record_running_step_submissions(conn: Connection, started: Sequence[StartedStep]) -> set[int]:
    """`record_running_step_submission` for several submissions on the session that holds their step run
    locks, in one statement: each handle stored, its lock given back and its events written, if its claim
    still holds. Returns the step run ids recorded; a claim that no longer holds records nothing, and its
    lock is still held (its caller records it the long way)."""
    if not started:
        return set()
    events = [(s.claim.step_run_id, e) for s in started for e in s.events]
    outbox = OutboxWriter.columns([e for _, e in events])
    rows = await conn.fetch(
        """WITH claims AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[])
                  AS c (id, holder, since, handle)),
           changed AS (
             UPDATE step_runs s SET state = 'running', handle = c.handle::jsonb
             FROM claims c
             WHERE s.id = c.id AND s.state = 'submitting' AND s.submitted_by = c.holder AND s.started_at = c.since
             RETURNING s.id, pg_advisory_unlock($5, (s.id % 2147483647)::int) AS unlocked),
           outbox_rows AS (
             INSERT INTO outbox (event_id, subject, headers, body)
             SELECT e.event_id, e.subject, e.headers, e.body
             FROM unnest($6::bigint[], $7::uuid[], $8::text[], $9::jsonb[], $10::bytea[])
                  AS e (step_run_id, event_id, subject, headers, body)
             WHERE e.step_run_id IN (SELECT id FROM changed))
           SELECT id FROM changed""",
        [s.claim.step_run_id for s in started],
        [s.claim.holder for s in started],
        [s.claim.since for s in started],
        [s.handle.model_dump_json() for s in started],
        STEP_RUN_LOCK_CLASS,
        [i for i, _ in events],
        *outbox,
    )
    return {int(r["id"]) for r in rows}


@asynccontextmanager
async def submission_lock(pool: asyncpg.Pool, claim: SubmissionClaim) -> AsyncIterator[bool]:
    """Hold the step run's lock while the body submits: a connection of `pool`, outside any
    transaction, that holds the session advisory lock (waiting for a reconciler that has the row).
    Yields False, holding nothing, when the claim no longer holds (the row was reconciled or taken
    over meanwhile): then nothing may be submitted."""
    async with _session(pool) as conn:
        await conn.execute(
            f"SELECT pg_advisory_lock($1, {_STEP_RUN_KEY})", STEP_RUN_LOCK_CLASS, claim.step_run_id
        )
        try:
            holds = await conn.fetchval(
                """SELECT EXISTS (SELECT 1 FROM step_runs
                   WHERE id = $1 AND state = 'submitting' AND submitted_by = $2 AND started_at = $3)""",
                claim.step_run_id,
                claim.holder,
                claim.since,
            )
            yield bool(holds)
        finally:
            await _unlock(conn, [claim.step_run_id])


@asynccontextmanager
async def step_run_locks(pool: asyncpg.Pool, step_run_ids: Sequence[int]) -> AsyncIterator[bool]:
    """Hold these step runs' locks while the body talks to their cluster (a reconciler looking a job
    up, evacuation stopping jobs), outside any transaction. Yields False, holding nothing, when someone
    holds one of them (a live submitter, another replica): then the body leaves them alone."""
    async with _session(pool) as conn:
        taken: list[int] = []
        try:
            for step_run_id in step_run_ids:
                if not await conn.fetchval(
                    f"SELECT pg_try_advisory_lock($1, {_STEP_RUN_KEY})", STEP_RUN_LOCK_CLASS, step_run_id
                ):
                    break
                taken.append(step_run_id)
            yield len(taken) == len(step_run_ids)
        finally:
            await _unlock(conn, taken)


@asynccontextmanager
async def _session(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    async with pool.acquire() as conn:
        keeps_session_state(conn)  # its pool unlocks the session on release, whatever happens here
        yield conn


async def _unlock(conn: Connection, step_run_ids: Sequence[int]) -> None:
    for step_run_id in step_run_ids:
        try:
            await conn.execute(
                f"SELECT pg_advisory_unlock($1, {_STEP_RUN_KEY})", STEP_RUN_LOCK_CLASS, step_run_id
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # The connection is broken (and the lock with it), or the pool's reset will unlock it.
            log.warning("scheduler.step_run_unlock_failed", step_run_id=step_run_id, error=str(exc))
            return
