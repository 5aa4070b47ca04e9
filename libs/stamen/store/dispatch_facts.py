"""What the dispatcher reads before it records a workset's next step, in one statement: whether the
dispatcher's claim would take the workset now (asked when the monitor starts the next step itself), the
buckets its tenant may use (a grant may have been revoked since intake), its cluster's row, and the steps
that already succeeded (a retry resumes after them), and every step run's resources (what the workset's
actuals count when this step was its last). They were four statements per step, and two more at the
end; the rules made of them stay in the dispatcher."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stamen.domain.admission import QueueHead, TenantQueue
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.store.actuals import STEP_COSTS_COLUMNS, STEP_COSTS_FROM, StepCost
from stamen.store.clusters import ClusterRecord, cluster_from_row
from stamen.store.db import Connection
from stamen.store.slots import HEAD_SQL, INPUT_BUCKETS_SQL
from stamen.store.step_runs import REGION_AVOIDED, SUCCEEDED_FROM, UNDISPATCHED_FROM, succeeded_where
from stamen.store.worksets import WorksetChange, WorksetRepository
from stamen.tenancy.buckets import TenantBuckets
from stamen.tenancy.grants import TENANT_RIGHTS_ORDER, tenant_buckets_of, tenant_rights_sql


@dataclass(frozen=True)
class DispatchFacts:
    dispatchable: bool | None  # None when not asked
    rights: TenantBuckets
    cluster: ClusterRecord | None  # None: no cluster of that name (removed)
    done_here: set[str]  # steps that succeeded on `cluster`, in any attempt
    done_anywhere: dict[str, str]  # every succeeded step, with the cluster of its first success
    costs: list[StepCost]  # every step run of the workset (what its actuals count, when it completes)


def _workset_facts(tenant: str, workset: str = "$1") -> str:
    """The facts about the workset whose id is the expression `workset` and whose tenant is the expression
    `tenant`, as select-list items. The buckets, the steps done and their resources come as two-dimensional
    text arrays (a row per bucket or step: built-in types, nothing for asyncpg to look up)."""
    succeeded_from, step_costs_from = (
        re.sub(r"\$1\b", workset, sql) for sql in (SUCCEEDED_FROM, STEP_COSTS_FROM)
    )
    return f"""ARRAY(SELECT ARRAY[r.bucket, r.access, r.source, r.granted_by, r.note]
          FROM ({tenant_rights_sql(tenant)}) r ORDER BY {TENANT_RIGHTS_ORDER}) AS rights,
    ARRAY(SELECT ARRAY[step, cluster] {succeeded_from}) AS succeeded,
    ARRAY(SELECT ARRAY[s.attempt::text, s.cpu_seconds::text, s.elapsed_seconds::text, s.max_rss_mb::text,
                       s.region, s.price_factor::text]
          FROM (SELECT {STEP_COSTS_COLUMNS} {step_costs_from}) s) AS costs"""


# $1: the workset, $2: its tenant, $3: its cluster, $4: whether to ask if it is dispatchable; the cluster's
# columns ride on the one row (NULL when there is no such cluster).
_FACTS_SQL = f"""SELECT
    CASE WHEN $4::bool THEN EXISTS (SELECT 1 {UNDISPATCHED_FROM} AND w.id = $1) END AS dispatchable,
    {_workset_facts("$2")},
    c.*
  FROM (SELECT 1) AS one LEFT JOIN clusters c ON c.name = $3"""
# Read with the workset $1 itself (`WorksetRepository.get_with`, whose row is `w`).
_WITH_WORKSET_SQL = _workset_facts("w.tenant_id")

# The head of the one queue $1 (tenant), $2 (priority) read and locked with its placement facts and the facts
# about it: one statement. The lock's recheck of a row changed meanwhile asks again that it is still queued
# in that queue (the head's own read is not rechecked); if not, no row.
_HEAD_WITH_FACTS_SQL = f"""SELECT w.*, w.spec ->> 'preferred_cluster' AS preferred_cluster,
    {INPUT_BUCKETS_SQL} AS buckets, {_workset_facts("w.tenant_id", "w.id")}
  FROM ({HEAD_SQL}) head JOIN worksets w ON w.id = head.id
  WHERE w.state = 'queued' AND w.tenant_id = $1::text AND w.priority = $2::text
  FOR UPDATE OF w"""


# Read with a running step's end (`ended_step_and_facts`): the statement sees the database as it began,
# before its own UPDATE, so the ended step as it is now (`changed`) stands in for its row as it was.
_CLUSTER_COLUMNS = (
    "name",
    "region",
    "executor",
    "max_concurrent",
    "price_factor",
    "data_locations",
    "status",
    "config",
)
_WITH_ENDED_STEP_SQL = f"""ARRAY(SELECT ARRAY[r.bucket, r.access, r.source, r.granted_by, r.note]
          FROM ({tenant_rights_sql("w.tenant_id")}) r ORDER BY {TENANT_RIGHTS_ORDER}) AS rights,
    ARRAY(SELECT ARRAY[t.step, t.cluster] FROM (
            SELECT id, step, cluster FROM step_runs
            WHERE workset_id = w.id AND state = 'succeeded' AND id <> changed.id
            UNION ALL SELECT changed.id, changed.step, changed.cluster WHERE changed.state = 'succeeded') t
          ORDER BY t.step, t.id) AS succeeded,
    ARRAY(SELECT ARRAY[s.attempt::text, s.cpu_seconds::text, s.elapsed_seconds::text, s.max_rss_mb::text,
                       s.region, s.price_factor::text]
          FROM (SELECT {STEP_COSTS_COLUMNS} FROM step_runs s LEFT JOIN clusters c ON c.name = s.cluster
                WHERE s.workset_id = w.id AND s.id <> changed.id
                UNION ALL
                SELECT changed.attempt, (changed.resources->>'cpu_seconds')::float8,
                       (changed.resources->>'elapsed_seconds')::float8, (changed.resources->>'max_rss_mb')::float8,
                       c.region, c.price_factor
                FROM (SELECT 1) AS one LEFT JOIN clusters c ON c.name = changed.cluster) s) AS costs,
    NOT EXISTS (SELECT 1 FROM step_runs s WHERE s.workset_id = w.id AND s.attempt = w.attempt
                AND s.state IN ('submitting', 'pending', 'running') AND s.id <> changed.id) AS no_other_step,
    {REGION_AVOIDED} AS region_avoided,
    {", ".join(f"cl.{c} AS cluster_{c}" for c in _CLUSTER_COLUMNS)}"""


async def ended_step_and_facts(
    worksets: WorksetRepository, change: WorksetChange
) -> tuple[Workset, DispatchFacts] | None:
    """A running step's end recorded (`finishing_active_step_run`) and its workset read and locked, with what
    the dispatcher reads before it records the next step, in one statement; None when nothing was recorded.
    Whether the dispatcher's claim would take the workset now is answered as its claim asks it
    (`UNDISPATCHED_FROM`): the workset scheduled or running (its row as locked), no step of its attempt active
    but the one that ended, its region not to be avoided. No other step of the attempt can be recorded while
    the ended one was active (every way to record one requires none), so the statement's snapshot, taken
    before the workset's lock, cannot miss one."""
    got = await worksets.get_changed_with(
        change, _WITH_ENDED_STEP_SQL, joins="LEFT JOIN clusters cl ON cl.name = w.cluster"
    )
    return None if got is None else _ended_facts(*got)


async def ended_steps_and_facts(
    worksets: WorksetRepository, change: WorksetChange
) -> dict[int, tuple[Workset, DispatchFacts]]:
    """`ended_step_and_facts` for the ends of several running steps (`finishing_active_step_runs`), each of a
    different workset, in one statement: by step run id, those recorded (the others were recorded by another
    replica, or are held by evacuation), each with its workset read and locked and the dispatcher's facts."""
    got = await worksets.get_changed_all_with(
        change,
        _WITH_ENDED_STEP_SQL + ", changed.id AS ended_step_run_id",
        joins="LEFT JOIN clusters cl ON cl.name = w.cluster",
    )
    return {int(row["ended_step_run_id"]): _ended_facts(ws, row) for ws, row in got}


def _ended_facts(ws: Workset, row: Any) -> tuple[Workset, DispatchFacts]:
    found = (
        cluster_from_row({c: row[f"cluster_{c}"] for c in _CLUSTER_COLUMNS})
        if row["cluster_name"] is not None
        else None
    )
    dispatchable = (
        ws.state in (WorksetState.SCHEDULED, WorksetState.RUNNING)
        and bool(row["no_other_step"])
        and not row["region_avoided"]
    )
    return ws, _facts(row, ws.tenant_id, ws.cluster or "", found, dispatchable)


async def dispatch_facts(
    conn: Connection, workset_id: str, tenant_id: str, cluster: str, *, ask_dispatchable: bool = False
) -> DispatchFacts:
    row = await conn.fetchrow(_FACTS_SQL, workset_id, tenant_id, cluster, ask_dispatchable)
    assert row is not None  # one row, whatever matches
    found = cluster_from_row(row) if row["name"] is not None else None
    return _facts(row, tenant_id, cluster, found, row["dispatchable"])


async def workset_and_facts(
    worksets: WorksetRepository, workset_id: str, cluster: str, found: ClusterRecord | None
) -> tuple[Workset, DispatchFacts]:
    """The workset read and locked (FOR UPDATE) with the facts about it, in one statement, for a dispatch on
    `cluster`, whose row its caller read (`found`, None: no such cluster): admission, which read every
    cluster's row to place the workset, under its lock. Whether it is dispatchable is not asked."""
    ws, row = await worksets.get_with(workset_id, _WITH_WORKSET_SQL)
    return ws, _facts(row, ws.tenant_id, cluster, found, None)


async def queue_head_and_workset(
    worksets: WorksetRepository, queue: TenantQueue
) -> tuple[QueueHead, Workset, Any] | None:
    """The head of `queue` with its placement facts (`SlotLedger.queue_heads(facts=True)`), and the workset
    itself read and locked with what the dispatcher reads before it records its first step
    (`workset_and_facts`), in one statement, for admission with one queue in front (they were two, the second
    after the placement); `facts_on` makes the facts once the cluster is chosen. None: the queue is empty."""
    got = await worksets.get_locked_by(_HEAD_WITH_FACTS_SQL, queue.tenant_id, queue.priority)
    if got is None:
        return None
    ws, row = got
    head = QueueHead(
        workset_id=ws.id,
        tenant_id=ws.tenant_id,
        priority=ws.priority,
        queued_at=row["queued_at"],
        preferred_cluster=row["preferred_cluster"],
        data_locations=tuple(row["buckets"]),
    )
    return head, ws, row


def facts_on(row: Any, ws: Workset, cluster: str, found: ClusterRecord | None) -> DispatchFacts:
    """The facts `queue_head_and_workset` read, for a dispatch on `cluster` (whose row is `found`)."""
    return _facts(row, ws.tenant_id, cluster, found, None)


def _facts(
    row: Any, tenant_id: str, cluster: str, found: ClusterRecord | None, dispatchable: bool | None
) -> DispatchFacts:
    here, anywhere = succeeded_where([(step, where) for step, where in row["succeeded"]], cluster)
    return DispatchFacts(
        dispatchable=dispatchable,
        rights=tenant_buckets_of(tenant_id, row["rights"]),
        cluster=found,
        done_here=here,
        done_anywhere=anywhere,
        costs=[_cost(*r) for r in row["costs"]],
    )


def _cost(
    attempt: str, cpu: str | None, elapsed: str | None, rss: str | None, region: str | None, price: str | None
) -> StepCost:
    def number(text: str | None) -> float | None:
        return None if text is None else float(text)

    return StepCost(int(attempt), number(cpu), number(elapsed), number(rss), region, number(price))
