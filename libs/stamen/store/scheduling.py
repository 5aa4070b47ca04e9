"""SchedulerRepository: clusters, limits, slot leases, runs, step runs and timers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.diagnostics.codes import RetryClass
from stamen.domain.admission import ClusterView, QueueHead
from stamen.domain.clusters import ClusterStatus, ExecutorKind
from stamen.domain.lifecycle import WorksetState
from stamen.domain.steps import StepRunState
from stamen.domain.workset import Workset
from stamen.events.envelope import Envelope
from stamen.events.types import RetryScheduled, WorksetDeadLettered, WorksetQueued
from stamen.executors.base import JobHandle, JobStatus
from stamen.retry import GiveUp, GiveUpReason, RequeueChanges, RetryPolicy, decide_after_failure
from stamen.store.db import Connection
from stamen.store.worksets import WorksetRepository

# Admission runs under this transaction-scoped advisory lock: replicas take turns deciding, so the
# counts they read cannot be stale when they insert a lease.
ADMISSION_LOCK_ID = 0x5354414D01


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    region: str
    executor: ExecutorKind
    max_concurrent: int
    price_factor: float = 1.0
    data_locations: tuple[str, ...] = ()
    status: ClusterStatus = "active"
    config: dict[str, Any] | None = None


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


@dataclass(frozen=True)
class DueTimer:
    id: int
    workset_id: str
    kind: str
    due_at: datetime
    payload: dict[str, Any]


class ClusterNotFound(LookupError):
    code = "CLUSTER_NOT_FOUND"


class ClusterBusy(RuntimeError):
    code = "CLUSTER_BUSY"


def _cluster(r: Any) -> ClusterRecord:
    return ClusterRecord(
        name=r["name"],
        region=r["region"],
        executor=r["executor"],
        max_concurrent=r["max_concurrent"],
        price_factor=r["price_factor"],
        data_locations=tuple(r["data_locations"]),
        status=r["status"],
        config=json.loads(r["config"]),
    )


def _step_run(r: Any) -> StepRunRow:
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
    )


class SchedulerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- clusters and limits -------------------------------------------------------------------

    async def upsert_cluster(self, c: ClusterRecord) -> None:
        await self._conn.execute(
            """INSERT INTO clusters (name, region, executor, max_concurrent, price_factor, data_locations, status, config)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
               ON CONFLICT (name) DO UPDATE SET region = $2, executor = $3, max_concurrent = $4, price_factor = $5,
                   data_locations = $6, status = $7, config = $8::jsonb, updated_at = now()""",
            c.name,
            c.region,
            c.executor,
            c.max_concurrent,
            c.price_factor,
            list(c.data_locations),
            c.status,
            json.dumps(c.config or {}),
        )

    async def clusters(self) -> list[ClusterRecord]:
        return [_cluster(r) for r in await self._conn.fetch("SELECT * FROM clusters ORDER BY name")]

    async def cluster(self, name: str) -> ClusterRecord:
        row = await self._conn.fetchrow("SELECT * FROM clusters WHERE name = $1", name)
        if row is None:
            raise ClusterNotFound(f"no cluster named {name!r}; see `stamen cluster ls`")
        return _cluster(row)

    async def set_cluster_status(self, name: str, status: ClusterStatus) -> None:
        done = await self._conn.execute(
            "UPDATE clusters SET status = $2, updated_at = now() WHERE name = $1", name, status
        )
        if done != "UPDATE 1":
            raise ClusterNotFound(f"no cluster named {name!r}; see `stamen cluster ls`")

    async def remove_cluster(self, name: str) -> None:
        busy = await self._conn.fetchval("SELECT count(*) FROM slot_leases WHERE cluster = $1", name)
        if busy:
            raise ClusterBusy(f"cluster {name!r} runs {busy} worksets; drain it and wait for them to finish")
        done = await self._conn.execute("DELETE FROM clusters WHERE name = $1", name)
        if done != "DELETE 1":
            raise ClusterNotFound(f"no cluster named {name!r}; see `stamen cluster ls`")

    # Tenant limits are written by stamen.customers.limits.set_tenant_limit only (with the customer's quota);
    # admission just reads them.
    async def tenant_limits(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT tenant_id, max_concurrent FROM tenant_limits")
        return {r["tenant_id"]: r["max_concurrent"] for r in rows}

    async def region_health(self) -> dict[str, str]:
        """Status per region (healthy, degraded, down); a region without a row is unknown (healthy)."""
        rows = await self._conn.fetch("SELECT region, status FROM region_health")
        return {r["region"]: r["status"] for r in rows}

    async def region_latency(self) -> dict[str, float]:
        """The regions service's moving-average probe latency per region, in ms (regions it measured)."""
        rows = await self._conn.fetch("SELECT region, latency_ms FROM region_health WHERE latency_ms IS NOT NULL")
        return {r["region"]: r["latency_ms"] for r in rows}

    async def set_region_health(self, region: str, status: str, reason: str = "") -> None:
        """Sets a status directly, with no history row and no event: for tests. The regions service and
        the operator commands write through RegionRepository.change_status (history + region.health_changed)."""
        await self._conn.execute(
            """INSERT INTO region_health (region, status, reason) VALUES ($1, $2, $3)
               ON CONFLICT (region) DO UPDATE SET status = $2, reason = $3, updated_at = now()""",
            region,
            status,
            reason,
        )

    # -- admission -----------------------------------------------------------------------------

    async def lock_admission(self) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK_ID)

    async def queue_heads(self) -> list[QueueHead]:
        """The oldest queued workset of each (tenant, priority): all that fair share needs to see.

        A skip scan over the worksets_queue_heads index: each step of the recursion descends the
        index once to the first row of the next (tenant, priority), so the cost grows with the number
        of queues, not with the number of queued worksets. Only the facts admission scores are read
        (the preferred cluster, the input buckets), not whole specs."""
        rows = await self._conn.fetch(
            f"""WITH RECURSIVE heads AS (
                   (SELECT tenant_id, priority, queued_at, id FROM worksets WHERE state = 'queued'
                    ORDER BY tenant_id, priority, queued_at, id LIMIT 1)
                   UNION ALL
                   SELECT next.* FROM heads h, LATERAL (
                       SELECT tenant_id, priority, queued_at, id FROM worksets
                       WHERE state = 'queued' AND (tenant_id, priority) > (h.tenant_id, h.priority)
                       ORDER BY tenant_id, priority, queued_at, id LIMIT 1) next
               )
               SELECT w.id, w.tenant_id, w.priority, w.queued_at,
                      w.spec ->> 'preferred_cluster' AS preferred_cluster, {_INPUT_BUCKETS_SQL} AS buckets
               FROM heads h JOIN worksets w ON w.id = h.id
               ORDER BY h.tenant_id, h.priority"""
        )
        return [
            QueueHead(
                workset_id=r["id"],
                tenant_id=r["tenant_id"],
                priority=r["priority"],
                queued_at=r["queued_at"],
                preferred_cluster=r["preferred_cluster"],
                data_locations=tuple(r["buckets"]),
            )
            for r in rows
        ]

    async def cluster_views(self) -> list[ClusterView]:
        rows = await self._conn.fetch(
            """SELECT c.*, (SELECT count(*) FROM slot_leases l WHERE l.cluster = c.name) AS running
               FROM clusters c ORDER BY c.name"""
        )
        return [
            ClusterView(
                name=r["name"],
                region=r["region"],
                max_concurrent=r["max_concurrent"],
                running=r["running"],
                price_factor=r["price_factor"],
                data_locations=tuple(r["data_locations"]),
                status=r["status"],
            )
            for r in rows
        ]

    async def running_by_tenant(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT tenant_id, count(*) AS n FROM slot_leases GROUP BY tenant_id")
        return {r["tenant_id"]: r["n"] for r in rows}

    async def last_admitted(self) -> dict[str, datetime]:
        """When each tenant with queued worksets was last admitted (the others do not compete now).
        The queued tenants by a skip scan (worksets_queue_heads), each one's latest run by one
        descent of workset_runs_tenant: neither the queue nor the history is read whole."""
        rows = await self._conn.fetch(
            """WITH RECURSIVE tenants AS (
                   (SELECT tenant_id FROM worksets WHERE state = 'queued' ORDER BY tenant_id LIMIT 1)
                   UNION ALL
                   SELECT next.tenant_id FROM tenants t, LATERAL (
                       SELECT tenant_id FROM worksets WHERE state = 'queued' AND tenant_id > t.tenant_id
                       ORDER BY tenant_id LIMIT 1) next
               )
               SELECT t.tenant_id, last.at FROM tenants t, LATERAL (
                   SELECT admitted_at AS at FROM workset_runs r WHERE r.tenant_id = t.tenant_id
                   ORDER BY admitted_at DESC LIMIT 1) last"""
        )
        return {r["tenant_id"]: r["at"] for r in rows}

    async def acquire_lease(
        self, *, workset_id: str, tenant_id: str, cluster: str, holder: str, attempt: int
    ) -> None:
        await self._conn.execute(
            """INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder, acquired_at)
               VALUES ($1, $2, $3, $4, clock_timestamp())""",
            workset_id,
            tenant_id,
            cluster,
            holder,
        )
        await self._conn.execute(
            # clock_timestamp(), not now(): now() is when the transaction began, which may be before
            # it waited for the admission lock, so runs would seem to overlap when they did not.
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               VALUES ($1, $2, $3, $4, $5, clock_timestamp())""",
            workset_id,
            attempt,
            tenant_id,
            cluster,
            holder,
        )

    async def release_lease(self, workset_id: str, attempt: int, outcome: str) -> None:
        await self._conn.execute("DELETE FROM slot_leases WHERE workset_id = $1", workset_id)
        await self._conn.execute(
            """UPDATE workset_runs SET released_at = clock_timestamp(), outcome = $3
               WHERE workset_id = $1 AND attempt = $2 AND released_at IS NULL""",
            workset_id,
            attempt,
            outcome,
        )

    async def runs(self, workset_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            "SELECT * FROM workset_runs WHERE ($1::text IS NULL OR workset_id = $1) ORDER BY admitted_at",
            workset_id,
        )
        return [dict(r) for r in rows]

    # -- dispatch and monitoring ---------------------------------------------------------------

    async def claim_undispatched(self, limit: int = 20) -> list[str]:
        """Scheduled worksets with no step running or being submitted: newly admitted, or whose last
        step has ended."""
        rows = await self._conn.fetch(
            """SELECT w.id FROM worksets w
               WHERE w.state IN ('scheduled', 'running') AND NOT EXISTS (
                   SELECT 1 FROM step_runs s WHERE s.workset_id = w.id AND s.attempt = w.attempt
                   AND s.state IN ('submitting', 'pending', 'running'))
               -- nothing new starts in a region that is down: the evacuation moves these worksets
               AND NOT EXISTS (SELECT 1 FROM clusters c JOIN region_health h ON h.region = c.region
                               WHERE c.name = w.cluster AND h.status = 'down')
               ORDER BY w.updated_at LIMIT $1 FOR UPDATE OF w SKIP LOCKED""",
            limit,
        )
        return [r["id"] for r in rows]

    async def completed_steps(self, workset_id: str, cluster: str) -> set[str]:
        """Steps that succeeded on `cluster` in any attempt. Only those: each cluster has its own
        workdir_root, so another cluster's outputs are not where this one's steps look for them."""
        rows = await self._conn.fetch(
            """SELECT DISTINCT step FROM step_runs
               WHERE workset_id = $1 AND cluster = $2 AND state = 'succeeded'""",
            workset_id,
            cluster,
        )
        return {r["step"] for r in rows}

    async def succeeded_anywhere(self, workset_id: str) -> dict[str, str]:
        """Steps that succeeded on any cluster, with the cluster: with outputs exported to S3, they
        count as done wherever the workset runs next (the dispatcher checks which steps export)."""
        rows = await self._conn.fetch(
            """SELECT DISTINCT ON (step) step, cluster FROM step_runs
               WHERE workset_id = $1 AND state = 'succeeded' ORDER BY step, id""",
            workset_id,
        )
        return {r["step"]: r["cluster"] for r in rows}

    async def worksets_in_down_regions(self) -> list[StrandedWorkset]:
        """Admitted worksets whose cluster is in a region that is down, with how long it has been down
        and whether a job of the current attempt is (or may be) running there."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.attempt, w.cluster, c.region, h.reason,
                      extract(epoch FROM clock_timestamp() - h.changed_at) AS down_seconds,
                      EXISTS (SELECT 1 FROM step_runs s WHERE s.workset_id = w.id AND s.attempt = w.attempt
                              AND s.state IN ('submitting', 'pending', 'running')) AS active
               FROM worksets w JOIN clusters c ON c.name = w.cluster
               JOIN region_health h ON h.region = c.region AND h.status = 'down'
               WHERE w.state IN ('scheduled', 'running') ORDER BY w.id"""
        )
        return [
            StrandedWorkset(
                r["id"], r["attempt"], r["cluster"], r["region"], r["reason"], float(r["down_seconds"]), r["active"]
            )
            for r in rows
        ]

    async def lock_active_steps(self, workset_id: str, attempt: int) -> list[ActiveStep] | None:
        """The current attempt's steps that are submitting or running, locked; None if another
        process holds one of them (a submitter mid-call, or the monitor recording its end)."""
        rows = await self._conn.fetch(
            """SELECT id, step, state, handle FROM step_runs
               WHERE workset_id = $1 AND attempt = $2 AND state IN ('submitting', 'pending', 'running')
               ORDER BY id FOR UPDATE SKIP LOCKED""",
            workset_id,
            attempt,
        )
        total = await self._conn.fetchval(
            """SELECT count(*) FROM step_runs WHERE workset_id = $1 AND attempt = $2
               AND state IN ('submitting', 'pending', 'running')""",
            workset_id,
            attempt,
        )
        if total != len(rows):
            return None
        return [
            ActiveStep(r["id"], r["step"], StepRunState(r["state"]), JobHandle.model_validate_json(r["handle"]) if r["handle"] else None)
            for r in rows
        ]

    async def mark_step_lost(self, step_run_id: int, reason: str) -> None:
        await self._conn.execute(
            """UPDATE step_runs SET state = 'lost', reason = $2, log_tail = $2, ended_at = clock_timestamp()
               WHERE id = $1 AND state IN ('submitting', 'pending', 'running')""",
            step_run_id,
            reason,
        )

    async def record_submitting(
        self, *, workset_id: str, attempt: int, step: str, step_index: int, cluster: str, holder: str
    ) -> SubmissionClaim:
        """The step run, committed before the executor is called (its handle follows)."""
        row = await self._conn.fetchrow(
            """INSERT INTO step_runs (workset_id, attempt, step, step_index, cluster, state, submitted_by,
                                      started_at)
               VALUES ($1, $2, $3, $4, $5, 'submitting', $6, clock_timestamp()) RETURNING id, started_at""",
            workset_id,
            attempt,
            step,
            step_index,
            cluster,
            holder,
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        return SubmissionClaim(int(row["id"]), holder, row["started_at"])

    async def lock_submitting(self, claim: SubmissionClaim) -> bool:
        """Held by the submitter while it submits: a replica reconciling stale rows skips a locked one.
        False if the claim no longer holds (the row was reconciled, or taken over, meanwhile): then
        nothing may be submitted."""
        row = await self._conn.fetchrow(
            """SELECT id FROM step_runs
               WHERE id = $1 AND state = 'submitting' AND submitted_by = $2 AND started_at = $3
               FOR UPDATE""",
            claim.step_run_id,
            claim.holder,
            claim.since,
        )
        return row is not None

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

    async def claim_stale_submission(
        self, older_than_seconds: float, *, skip: Sequence[int] = ()
    ) -> SubmittingStepRun | None:
        """A 'submitting' row whose submitter is gone: not locked (a live submitter holds its row's lock
        while it submits) and older than the grace period (which covers the moment between the commit
        of the row and the submitter taking its lock). `skip`: rows already looked at in this pass
        (deferred), so one that cannot be settled does not hide the others."""
        row = await self._conn.fetchrow(
            """SELECT *, extract(epoch FROM clock_timestamp() - started_at)::float8 AS age_seconds
               FROM step_runs
               WHERE state = 'submitting' AND started_at < clock_timestamp() - make_interval(secs => $1)
                 AND id <> ALL($2::bigint[])
               ORDER BY started_at LIMIT 1 FOR UPDATE SKIP LOCKED""",
            older_than_seconds,
            list(skip),
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

    async def active_step_runs(self, cluster: str) -> list[StepRunRow]:
        rows = await self._conn.fetch(
            "SELECT * FROM step_runs WHERE cluster = $1 AND state IN ('pending', 'running') ORDER BY id",
            cluster,
        )
        return [_step_run(r) for r in rows]

    async def lock_active_step_run(self, step_run_id: int) -> StepRunRow | None:
        row = await self._conn.fetchrow(
            """SELECT * FROM step_runs WHERE id = $1 AND state IN ('pending', 'running')
               FOR UPDATE SKIP LOCKED""",
            step_run_id,
        )
        return _step_run(row) if row else None

    async def finish_step_run(self, step_run_id: int, status: JobStatus) -> None:
        await self._conn.execute(
            """UPDATE step_runs SET state = $2, exit_code = $3, signal = $4, reason = $5, log_tail = $6,
                      resources = $7::jsonb, ended_at = coalesce($8, now())
               WHERE id = $1""",
            step_run_id,
            status.state.value,
            status.exit_code,
            status.signal,
            status.reason,
            status.log_tail[-8000:],
            status.resources.model_dump_json(),
            status.ended_at,
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
        return _step_run(row) if row else None

    async def cancel_requested(self) -> list[tuple[str, str]]:
        rows = await self._conn.fetch(
            """SELECT id, cancel_requested_by FROM worksets
               WHERE cancel_requested_by IS NOT NULL AND state IN ('scheduled', 'running')"""
        )
        return [(r["id"], r["cancel_requested_by"]) for r in rows]

    async def overdue(self) -> list[str]:
        """Running worksets past their max duration that have not been asked to stop yet."""
        rows = await self._conn.fetch(
            """SELECT w.id FROM worksets w JOIN workset_runs r ON r.workset_id = w.id AND r.attempt = w.attempt
               WHERE w.state IN ('scheduled', 'running') AND w.cancel_requested_by IS NULL
                 AND w.max_duration_seconds IS NOT NULL
                 AND r.admitted_at + make_interval(secs => w.max_duration_seconds) < now()"""
        )
        return [r["id"] for r in rows]

    # -- timers --------------------------------------------------------------------------------

    async def add_timer(self, workset_id: str, kind: str, due_at: datetime, payload: dict[str, Any]) -> None:
        await self._conn.execute(
            """INSERT INTO timers (workset_id, kind, due_at, payload) VALUES ($1, $2, $3, $4::jsonb)
               ON CONFLICT DO NOTHING""",
            workset_id,
            kind,
            due_at,
            json.dumps(payload),
        )

    async def claim_due_timers(self, limit: int = 50) -> list[DueTimer]:
        rows = await self._conn.fetch(
            """SELECT * FROM timers WHERE fired_at IS NULL AND due_at <= now()
               ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [
            DueTimer(r["id"], r["workset_id"], r["kind"], r["due_at"], json.loads(r["payload"])) for r in rows
        ]

    async def postpone_timer(self, timer_id: int, seconds: float) -> None:
        await self._conn.execute(
            "UPDATE timers SET due_at = clock_timestamp() + make_interval(secs => $2) WHERE id = $1",
            timer_id,
            seconds,
        )

    async def mark_timer_fired(self, timer_id: int) -> None:
        await self._conn.execute("UPDATE timers SET fired_at = now() WHERE id = $1", timer_id)

    async def next_timer_due(self) -> datetime | None:
        due: datetime | None = await self._conn.fetchval(
            "SELECT min(due_at) FROM timers WHERE fired_at IS NULL"
        )
        return due

    async def timers_for(self, workset_id: str) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            "SELECT * FROM timers WHERE workset_id = $1 ORDER BY due_at", workset_id
        )
        return [dict(r) for r in rows]


# The buckets a workset's inputs live in (data locality): the bucket of every `s3://` r1/r2 URI of its
# samples, sorted, once each. In SQL, so admission reads a few words per queue head, not its spec.
_INPUT_BUCKETS_SQL = """ARRAY(
    SELECT DISTINCT split_part(substr(uri.value #>> '{}', 6), '/', 1) COLLATE "C"
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.spec -> 'samples') = 'array'
                                   THEN w.spec -> 'samples' ELSE '[]'::jsonb END) AS sample,
         LATERAL (VALUES (sample -> 'r1'), (sample -> 'r2')) AS uri (value)
    WHERE jsonb_typeof(sample) = 'object' AND jsonb_typeof(uri.value) = 'string'
      AND starts_with(uri.value #>> '{}', 's3://')
    ORDER BY 1)"""


class DeadLetterRepository:
    """Worksets stamen will not retry (budget used up, not retryable, retries off): parked for an operator
    to inspect, requeue or purge. `reason` is a stamen.retry.GiveUpReason value, `detail` its sentence."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def park(
        self,
        workset_id: str,
        tenant_id: str,
        reason: GiveUpReason,
        attempts: int,
        last_code: str | None,
        detail: str = "",
    ) -> None:
        await self._conn.execute(
            """INSERT INTO dead_letters (workset_id, tenant_id, reason, attempts, last_code, detail)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (workset_id) DO UPDATE SET reason = $3, attempts = $4, last_code = $5, detail = $6,
                   parked_at = now(), requeued_at = NULL, requeued_by = NULL""",
            workset_id,
            tenant_id,
            reason.value,
            attempts,
            last_code,
            detail,
        )

    async def reasons_for(self, workset_ids: Sequence[str]) -> dict[str, str]:
        """workset id -> reason, for those of `workset_ids` that are parked now (listings)."""
        rows = await self._conn.fetch(
            "SELECT workset_id, reason FROM dead_letters WHERE workset_id = ANY($1::text[]) AND requeued_at IS NULL",
            list(workset_ids),
        )
        return {r["workset_id"]: r["reason"] for r in rows}

    async def list(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            """SELECT * FROM dead_letters WHERE requeued_at IS NULL AND ($1::text IS NULL OR tenant_id = $1)
               ORDER BY parked_at""",
            tenant_id,
        )
        return [dict(r) for r in rows]

    async def get(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM dead_letters WHERE workset_id = $1 AND requeued_at IS NULL", workset_id
        )
        return dict(row) if row else None

    async def mark_requeued(self, workset_id: str, actor: str) -> None:
        await self._conn.execute(
            "UPDATE dead_letters SET requeued_at = now(), requeued_by = $2 WHERE workset_id = $1",
            workset_id,
            actor,
        )

    async def purge(self, workset_id: str) -> bool:
        return bool(
            await self._conn.execute("DELETE FROM dead_letters WHERE workset_id = $1", workset_id)
            == "DELETE 1"
        )


class WorksetNotRequeueable(RuntimeError):
    code = "WORKSET_NOT_REQUEUEABLE"


@dataclass(frozen=True)
class FailureOutcome:
    """What record_failure did: `retry` (retry_wait, timer due at `due_at`), `dead_lettered` (stamen
    will not retry it: `reason` says why) or `stale` (not this attempt's failure)."""

    workset_id: str
    action: str
    detail: str
    due_at: datetime | None = None
    reason: GiveUpReason | None = None


@dataclass(frozen=True)
class RetryableWorkset:
    """A workset waiting for its next attempt, and when it is due."""

    workset_id: str
    tenant_id: str
    failed_attempt: int
    retry_count: int
    max_retries: int
    memory_multiplier: float
    due_at: datetime


class RetryRepository:
    """The retry operations the rest of the system uses: record a diagnosed failure (and decide what
    follows), list the worksets waiting to retry, and send a workset back to the queue: when its
    retry timer is due (reset_for_retry) or when an operator requeues it (requeue_with_fresh_budget).

    Each runs inside the caller's unit of work, so the workset's change, its history, its events,
    the timer and the dead letter commit together."""

    def __init__(
        self,
        conn: Connection,
        worksets: WorksetRepository,
        scheduling: SchedulerRepository,
        dead_letters: DeadLetterRepository,
    ) -> None:
        self._conn = conn
        self._worksets = worksets
        self._scheduling = scheduling
        self._dead_letters = dead_letters

    async def record_failure(
        self,
        workset_id: str,
        *,
        attempt: int,
        code: str,
        retry_class: RetryClass,
        policy: RetryPolicy | None,
        actor: str,
        cause: Envelope | None = None,
    ) -> FailureOutcome:
        """Record the diagnosis of failed `attempt` and act on what stamen.retry decides.

        retryable and budget left -> retry_wait, retry_count + 1, memory escalated for resource
        failures, a durable `retry` timer; otherwise (budget used up, not retryable, or `policy` None:
        retries switched off) -> dead_lettered, a dead_letters row and exactly one
        workset.dead_lettered, whose reason says which. A diagnosis of another attempt, or of a
        workset that is no longer failed (cancelled, requeued), changes nothing."""
        ws = await self._worksets.get(workset_id, for_update=True)
        if ws.state is not WorksetState.FAILED or attempt != ws.attempt:
            return FailureOutcome(ws.id, "stale", f"workset is {ws.state.value} at attempt {ws.attempt}")
        decision = decide_after_failure(policy, retry_class, ws.retry_count + 1, ws.max_retries)
        if isinstance(decision, GiveUp):
            await self._dead_letter(ws, decision, code=code, retry_class=retry_class, actor=actor, cause=cause)
            return FailureOutcome(ws.id, "dead_lettered", decision.detail, reason=decision.reason)
        due_at = await self._conn.fetchval(
            "SELECT clock_timestamp() + make_interval(secs => $1)", decision.delay_seconds
        )
        ws.retry_count += 1
        ws.memory_multiplier = max(ws.memory_multiplier, decision.memory_multiplier)
        detail = (
            f"{code} is {retry_class.value}: retry {ws.retry_count}/{ws.max_retries} "
            f"in {decision.delay_seconds:.1f}s"
        )
        ws.transition(
            WorksetState.RETRY_WAIT,
            actor=actor,
            reason=detail,
            event=RetryScheduled(attempt=ws.attempt + 1, due_at=due_at, delay_seconds=decision.delay_seconds),
            cause=cause,
        )
        await self._worksets.save(ws)
        await self._scheduling.add_timer(ws.id, "retry", due_at, {"attempt": ws.attempt + 1})
        return FailureOutcome(ws.id, "retry", detail, due_at)

    async def _dead_letter(
        self,
        ws: Workset,
        decision: GiveUp,
        *,
        code: str,
        retry_class: RetryClass,
        actor: str,
        cause: Envelope | None,
    ) -> None:
        ws.transition(
            WorksetState.DEAD_LETTERED,
            actor=actor,
            reason=f"{decision.reason.value}: {code}: {decision.detail}",
            event=WorksetDeadLettered(
                reason=decision.reason.value,
                attempts=ws.attempt,
                attempt=ws.attempt,
                code=code,
                retry_class=retry_class.value,
                retryable=retry_class.is_retryable,
                detail=decision.detail,
            ),
            cause=cause,
        )
        await self._worksets.save(ws)
        await self._dead_letters.park(ws.id, ws.tenant_id, decision.reason, ws.attempt, code, decision.detail)

    async def get_retryable_worksets(
        self, *, tenant_id: str | None = None, due_by: datetime | None = None, limit: int = 100
    ) -> list[RetryableWorkset]:
        """Worksets in retry_wait with the due time of their retry, soonest first (`due_by`: only those
        due by then)."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.tenant_id, w.attempt, w.retry_count, w.max_retries, w.memory_multiplier,
                      min(t.due_at) AS due_at
               FROM worksets w JOIN timers t
                 ON t.workset_id = w.id AND t.kind = 'retry' AND t.fired_at IS NULL
               WHERE w.state = 'retry_wait' AND ($1::text IS NULL OR w.tenant_id = $1)
               GROUP BY w.id
               HAVING ($2::timestamptz IS NULL OR min(t.due_at) <= $2)
               ORDER BY min(t.due_at), w.id LIMIT $3""",
            tenant_id,
            due_by,
            limit,
        )
        return [
            RetryableWorkset(
                workset_id=r["id"],
                tenant_id=r["tenant_id"],
                failed_attempt=r["attempt"],
                retry_count=r["retry_count"],
                max_retries=r["max_retries"],
                memory_multiplier=r["memory_multiplier"],
                due_at=r["due_at"],
            )
            for r in rows
        ]

    async def reset_for_retry(self, workset_id: str, *, actor: str, reason: str) -> Workset | None:
        """Its retry timer is due: retry_wait -> queued for the next attempt (admission places it again),
        with the retry budget it has. None, and nothing changed, when the workset left retry_wait
        meanwhile (cancelled). Steps that succeeded stay done."""
        ws = await self._worksets.get(workset_id, for_update=True)
        if ws.state is not WorksetState.RETRY_WAIT:
            return None
        await self._queue_next_attempt(ws, actor=actor, reason=reason)
        return ws

    async def requeue_with_fresh_budget(
        self, workset_id: str, *, actor: str, reason: str, changes: RequeueChanges | None = None
    ) -> Workset:
        """An operator's requeue: failed or dead_lettered -> queued for the next attempt, `changes`
        applied first, retry_count back to 0, and its dead letter (if any) marked requeued. Any other
        state raises WorksetNotRequeueable (WORKSET_NOT_REQUEUEABLE). Steps that succeeded stay done."""
        ws = await self._worksets.get(workset_id, for_update=True)
        if ws.state not in (WorksetState.FAILED, WorksetState.DEAD_LETTERED):
            raise WorksetNotRequeueable(
                f"workset {workset_id} is {ws.state}; only dead-lettered or failed worksets can be requeued"
            )
        if changes is not None:
            changes.apply(ws)
        ws.retry_count = 0
        await self._queue_next_attempt(ws, actor=actor, reason=reason)
        await self._dead_letters.mark_requeued(workset_id, actor)
        return ws

    async def _queue_next_attempt(self, ws: Workset, *, actor: str, reason: str) -> None:
        ws.transition(
            WorksetState.QUEUED,
            actor=actor,
            reason=reason,
            event=WorksetQueued(priority=ws.priority, attempt=ws.attempt + 1),
        )
        await self._worksets.save(ws)
