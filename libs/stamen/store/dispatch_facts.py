"""What the dispatcher reads before it records a workset's next step, in one statement: whether the
dispatcher's claim would take the workset now (asked when the monitor starts the next step itself), the
buckets its tenant may use (a grant may have been revoked since intake), its cluster's row, and the steps
that already succeeded (a retry resumes after them), and every step run's resources (what the workset's
actuals count when this step was its last). They were four statements per step, and two more at the
end; the rules made of them stay in the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stamen.domain.workset import Workset
from stamen.store.actuals import STEP_COSTS_COLUMNS, STEP_COSTS_FROM, StepCost
from stamen.store.clusters import ClusterRecord, cluster_from_row
from stamen.store.db import Connection
from stamen.store.step_runs import SUCCEEDED_FROM, UNDISPATCHED_FROM, succeeded_where
from stamen.store.worksets import WorksetRepository
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


def _workset_facts(tenant: str) -> str:
    """The facts about the workset $1 whose tenant is the expression `tenant`, as select-list items. The
    buckets, the steps done and their resources come as two-dimensional text arrays (a row per bucket or step:
    built-in types, nothing for asyncpg to look up)."""
    return f"""ARRAY(SELECT ARRAY[r.bucket, r.access, r.source, r.granted_by, r.note]
          FROM ({tenant_rights_sql(tenant)}) r ORDER BY {TENANT_RIGHTS_ORDER}) AS rights,
    ARRAY(SELECT ARRAY[step, cluster] {SUCCEEDED_FROM}) AS succeeded,
    ARRAY(SELECT ARRAY[s.attempt::text, s.cpu_seconds::text, s.elapsed_seconds::text, s.max_rss_mb::text,
                       s.region, s.price_factor::text]
          FROM (SELECT {STEP_COSTS_COLUMNS} {STEP_COSTS_FROM}) s) AS costs"""


# $1: the workset, $2: its tenant, $3: its cluster, $4: whether to ask if it is dispatchable; the cluster's
# columns ride on the one row (NULL when there is no such cluster).
_FACTS_SQL = f"""SELECT
    CASE WHEN $4::bool THEN EXISTS (SELECT 1 {UNDISPATCHED_FROM} AND w.id = $1) END AS dispatchable,
    {_workset_facts("$2")},
    c.*
  FROM (SELECT 1) AS one LEFT JOIN clusters c ON c.name = $3"""
# Read with the workset $1 itself (`WorksetRepository.get_with`, whose row is `w`).
_WITH_WORKSET_SQL = _workset_facts("w.tenant_id")


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
