"""What the dispatcher reads before it records a workset's next step, in one statement: whether the
dispatcher's claim would take the workset now (asked when the monitor starts the next step itself), the
buckets its tenant may use (a grant may have been revoked since intake), its cluster's row, and the steps
that already succeeded (a retry resumes after them), and every step run's resources (what the workset's
actuals count when this step was its last). They were four statements per step, and two more at the
end; the rules made of them stay in the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass

from stamen.store.actuals import STEP_COSTS_COLUMNS, STEP_COSTS_FROM, StepCost
from stamen.store.clusters import ClusterRecord, cluster_from_row
from stamen.store.db import Connection
from stamen.store.step_runs import SUCCEEDED_FROM, UNDISPATCHED_FROM, succeeded_where
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


# $1: the workset, $2: its tenant, $3: its cluster, $4: whether to ask if it is dispatchable. The buckets and
# the steps done come as two-dimensional text arrays (a row per bucket or step: built-in types, nothing for
# asyncpg to look up); the cluster's columns ride on the one row (NULL when there is no such cluster).
_FACTS_SQL = f"""SELECT
    CASE WHEN $4::bool THEN EXISTS (SELECT 1 {UNDISPATCHED_FROM} AND w.id = $1) END AS dispatchable,
    ARRAY(SELECT ARRAY[r.bucket, r.access, r.source, r.granted_by, r.note]
          FROM ({tenant_rights_sql("$2")}) r ORDER BY {TENANT_RIGHTS_ORDER}) AS rights,
    ARRAY(SELECT ARRAY[step, cluster] {SUCCEEDED_FROM}) AS succeeded,
    ARRAY(SELECT ARRAY[s.attempt::text, s.cpu_seconds::text, s.elapsed_seconds::text, s.max_rss_mb::text,
                       s.region, s.price_factor::text]
          FROM (SELECT {STEP_COSTS_COLUMNS} {STEP_COSTS_FROM}) s) AS costs,
    c.*
  FROM (SELECT 1) AS one LEFT JOIN clusters c ON c.name = $3"""


async def dispatch_facts(
    conn: Connection, workset_id: str, tenant_id: str, cluster: str, *, ask_dispatchable: bool = False
) -> DispatchFacts:
    row = await conn.fetchrow(_FACTS_SQL, workset_id, tenant_id, cluster, ask_dispatchable)
    assert row is not None  # one row, whatever matches
    here, anywhere = succeeded_where([(step, where) for step, where in row["succeeded"]], cluster)
    return DispatchFacts(
        dispatchable=row["dispatchable"],
        rights=tenant_buckets_of(tenant_id, row["rights"]),
        cluster=cluster_from_row(row) if row["name"] is not None else None,
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
