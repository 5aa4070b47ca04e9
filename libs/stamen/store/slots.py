"""SlotLedger: what admission reads and writes. The queues waiting (`admission_queues`,
`tenant_admissions`) and their heads, the clusters' load, tenant limits and
region health as admission sees them; the slot leases (`slot_leases`) and the run history they leave
(`workset_runs`). Admission decides under one advisory lock (lock_admission)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from asyncpg import Record

from stamen.domain.admission import ClusterView, Occupancy, QueueHead, TenantQueue
from stamen.store.clusters import ClusterRecord, cluster_from_row
from stamen.store.db import Connection
from stamen.store.worksets import SavedWith

# Admission runs under this transaction-scoped advisory lock: replicas take turns deciding, so the
# counts they read cannot be stale when they insert a lease.
ADMISSION_LOCK_ID = 0x5354414D01


@dataclass(frozen=True)
class PlacementView:
    """What placement scores against (`SlotLedger.placement_view_and_clusters`): the clusters with their
    load, the regions' health and latency, and the clusters' rows by name (the dispatcher's)."""

    clusters: list[ClusterView]
    health: dict[str, str]
    latency: dict[str, float]
    records: dict[str, ClusterRecord]


@dataclass(frozen=True)
class WaitingQueues:
    """What admission orders on (`SlotLedger.waiting_queues`)."""

    queues: list[TenantQueue]
    occupancy: Occupancy  # slots held in all, and by each tenant of `queues` holding any
    last_admitted: dict[str, datetime]  # of the tenants of `queues` ever admitted
    quotas: dict[str, int]  # of the tenants of `queues` with their own limit
    placement: PlacementView | None = None  # when asked for and a slot is free


class SlotLedger:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock_admission(self) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK_ID)

    async def waiting_queues(self, global_max: int, *, placement: bool = False) -> WaitingQueues:
        """The slots held, in all and by each tenant with a workset queued; every (tenant, priority) with
        a workset queued; when each of those tenants was last admitted, and their own quotas
        (`tenant_limits`; without a row, the deployment's default). What admission decides the order on,
        in one statement. With `global_max` slots or more held, the queues are left out: nothing may
        start, so a busy scheduler's idle decisions do not read them.

        `admission_queues` and `tenant_admissions` are kept by triggers in the transactions that queue,
        dequeue and admit (migration 0021), so this reads a few small rows per queue: the cost grows with
        the number of queues and running worksets, not with the queue's depth or the history, and no
        index is descended per queue. In no particular order: the order is `next_queues`'s.

        `placement`: with a slot free, also what `placement_view_and_clusters` reads, on the first row (one
        statement fewer per admission; the clusters' rows change only by an operator, and a lease is taken or
        given back only under the admission lock or by a completion, which can only leave more room)."""
        with_placement = f", CASE WHEN row_number() OVER () = 1 AND held.total < $1 THEN ({_PLACEMENT_SQL}) END AS placement"
        rows = await self._conn.fetch(
            """WITH running AS MATERIALIZED (SELECT tenant_id, count(*) AS n FROM slot_leases GROUP BY tenant_id),
                    held AS (SELECT coalesce(sum(n), 0)::int AS total FROM running)
               SELECT q.tenant_id, q.priority, a.last_admitted_at, l.max_concurrent, coalesce(r.n, 0) AS running,
                      held.total"""
            + (with_placement if placement else "")
            + """
               FROM held
               LEFT JOIN admission_queues q ON held.total < $1
               LEFT JOIN tenant_admissions a ON a.tenant_id = q.tenant_id
               LEFT JOIN tenant_limits l ON l.tenant_id = q.tenant_id
               LEFT JOIN running r ON r.tenant_id = q.tenant_id""",
            global_max,
        )
        queued = [r for r in rows if r["tenant_id"] is not None]
        return WaitingQueues(
            queues=[TenantQueue(r["tenant_id"], r["priority"]) for r in queued],
            occupancy=Occupancy(
                rows[0]["total"] if rows else 0,
                {r["tenant_id"]: r["running"] for r in queued if r["running"]},
            ),
            last_admitted={r["tenant_id"]: r["last_admitted_at"] for r in queued if r["last_admitted_at"]},
            quotas={r["tenant_id"]: r["max_concurrent"] for r in queued if r["max_concurrent"] is not None},
            placement=next((_placement_of(r["placement"]) for r in rows if r["placement"]), None)
            if placement
            else None,
        )

    async def queue_heads(self, queues: Sequence[TenantQueue], *, facts: bool) -> list[QueueHead]:
        """The oldest queued workset of each of `queues`: one descent each of the partial index
        worksets_queue_heads (tenant_id, priority, queued_at, id). With `facts`, also what placement
        scores (the preferred cluster, the input buckets, from the spec: one table row per head);
        without, index-only, and `head_facts` reads them for the head taken. Admission asks for the
        queues in front only: with one (the rule), in one statement with its facts.

        One queue is asked for with its tenant and priority as scalars (`HEAD_SQL`), not as arrays: the
        planner sizes `unnest` of an array it is given at once, so the array form's plan for one queue always
        looked cheaper planned afresh and each decision planned it again (~0.3 ms of PostgreSQL's CPU, more
        than its execution); with scalars its generic plan is kept (`pg_prepared_statements.generic_plans`)."""
        args: list[Any]
        if len(queues) == 1:
            heads_sql, args = HEAD_SQL, [queues[0].tenant_id, queues[0].priority]
        else:
            heads_sql, args = _HEADS_SQL, [[q.tenant_id for q in queues], [q.priority for q in queues]]
        if facts:
            sql = f"""SELECT head.*, w.spec ->> 'preferred_cluster' AS preferred_cluster, {INPUT_BUCKETS_SQL} AS buckets
                      FROM ({heads_sql}) head JOIN worksets w ON w.id = head.id"""
        else:
            sql = heads_sql
        rows = await self._conn.fetch(sql, *args)
        heads = [
            QueueHead(
                workset_id=r["id"], tenant_id=r["tenant_id"], priority=r["priority"], queued_at=r["queued_at"]
            )
            for r in rows
        ]
        if facts:
            heads = [
                replace(h, preferred_cluster=r["preferred_cluster"], data_locations=tuple(r["buckets"]))
                for h, r in zip(heads, rows, strict=True)
            ]
        return heads

    async def head_facts(self, head: QueueHead) -> QueueHead:
        """`head` with what placement scores: its preferred cluster and input buckets (from its spec)."""
        row = await self._conn.fetchrow(
            f"""SELECT w.spec ->> 'preferred_cluster' AS preferred_cluster, {INPUT_BUCKETS_SQL} AS buckets
                FROM worksets w WHERE w.id = $1""",
            head.workset_id,
        )
        if row is None:
            return head
        return replace(head, preferred_cluster=row["preferred_cluster"], data_locations=tuple(row["buckets"]))

    async def cluster_views(self) -> list[ClusterView]:
        rows = await self._conn.fetch(
            """SELECT c.*, (SELECT count(*) FROM slot_leases l WHERE l.cluster = c.name) AS running
               FROM clusters c ORDER BY c.name"""
        )
        return [_cluster_view(r) for r in rows]

    async def placement_view(self) -> tuple[list[ClusterView], dict[str, str], dict[str, float]]:
        """`cluster_views` and `region_states` in one statement (the region rows ride on the first
        cluster's row): what placement scores against, read once per admission."""
        views, health, latency, _ = await self.placement_view_and_clusters()
        return views, health, latency

    async def placement_view_and_clusters(
        self,
    ) -> tuple[list[ClusterView], dict[str, str], dict[str, float], dict[str, ClusterRecord]]:
        """`placement_view`, and the clusters' rows by name (the dispatcher's, for the workset placed)."""
        rows = await self._conn.fetch(
            """SELECT c.*, (SELECT count(*) FROM slot_leases l WHERE l.cluster = c.name) AS running,
                      CASE WHEN row_number() OVER (ORDER BY c.name) = 1 THEN (
                          SELECT json_agg(json_build_array(region, status, latency_ms)) FROM region_health)
                      END AS regions
               FROM clusters c ORDER BY c.name"""
        )
        regions: list[list[Any]] = json.loads(rows[0]["regions"] or "[]") if rows else []
        return (
            [_cluster_view(r) for r in rows],
            {region: status for region, status, _ in regions},
            {region: float(latency) for region, _, latency in regions if latency is not None},
            {r["name"]: cluster_from_row(r) for r in rows},
        )

    async def running_by_tenant(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT tenant_id, count(*) AS n FROM slot_leases GROUP BY tenant_id")
        return {r["tenant_id"]: r["n"] for r in rows}

    # Tenant limits are written by stamen.customers.limits.set_tenant_limit only (with the customer's quota);
    # admission just reads them.
    async def tenant_limits(self) -> dict[str, int]:
        rows = await self._conn.fetch("SELECT tenant_id, max_concurrent FROM tenant_limits")
        return {r["tenant_id"]: r["max_concurrent"] for r in rows}

    async def region_health(self) -> dict[str, str]:
        """Status per region (healthy, degraded, down); a region without a row is unknown (healthy)."""
        rows = await self._conn.fetch("SELECT region, status FROM region_health")
        return {r["region"]: r["status"] for r in rows}

    async def region_states(self) -> tuple[dict[str, str], dict[str, float]]:
        """`region_health` and `region_latency` in one read."""
        rows = await self._conn.fetch("SELECT region, status, latency_ms FROM region_health")
        return (
            {r["region"]: r["status"] for r in rows},
            {r["region"]: r["latency_ms"] for r in rows if r["latency_ms"] is not None},
        )

    async def region_latency(self) -> dict[str, float]:
        """The regions service's moving-average probe latency per region, in ms (regions it measured)."""
        rows = await self._conn.fetch(
            "SELECT region, latency_ms FROM region_health WHERE latency_ms IS NOT NULL"
        )
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

    async def acquire_lease(
        self, *, workset_id: str, tenant_id: str, cluster: str, holder: str, attempt: int
    ) -> None:
        """The slot lease and the run it starts, in one statement. clock_timestamp(), not now(): now() is
        when the transaction began, which may be before it waited for the admission lock, so runs would
        seem to overlap when they did not."""
        await self._conn.execute(
            """WITH lease AS (
                   INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder, acquired_at)
                   VALUES ($1, $3, $4, $5, clock_timestamp()))
               INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               VALUES ($1, $2, $3, $4, $5, clock_timestamp())""",
            workset_id,
            attempt,
            tenant_id,
            cluster,
            holder,
        )

    @staticmethod
    def leasing(*, workset_id: str, tenant_id: str, cluster: str, holder: str, attempt: int) -> SavedWith:
        """`acquire_lease` written by the statement that saves the admitted workset (one round trip fewer),
        only if the save goes through. A lease given back in the same transaction must be given back by a
        statement of its own (`release_lease`): a statement does not see what its own CTEs inserted."""
        return SavedWith(
            """lease AS (
                   INSERT INTO slot_leases (workset_id, tenant_id, cluster, holder, acquired_at)
                   SELECT $1, $3, $4, $5, clock_timestamp() WHERE EXISTS (SELECT 1 FROM updated)),
               run AS (
                   INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
                   SELECT $1, $2, $3, $4, $5, clock_timestamp() WHERE EXISTS (SELECT 1 FROM updated))""",
            (workset_id, attempt, tenant_id, cluster, holder),
        )

    @staticmethod
    def releasing(workset_id: str, attempt: int, outcome: str) -> SavedWith:
        """`release_lease` written by the statement that saves the workset (one round trip fewer), only if the
        save goes through. Returns the run it ended (`released_run`: its attempt, admitted_at, released_at)."""
        return SavedWith(
            """released_lease AS (DELETE FROM slot_leases WHERE workset_id = $1 AND EXISTS (SELECT 1 FROM updated)),
               released_run AS (
                   UPDATE workset_runs SET released_at = clock_timestamp(), outcome = $3
                   WHERE workset_id = $1 AND attempt = $2 AND released_at IS NULL AND EXISTS (SELECT 1 FROM updated)
                   RETURNING attempt, admitted_at, released_at)""",
            (workset_id, attempt, outcome),
        )

    async def release_lease(self, workset_id: str, attempt: int, outcome: str) -> None:
        """The slot lease given back and its run ended, in one statement."""
        await self._conn.execute(
            """WITH lease AS (DELETE FROM slot_leases WHERE workset_id = $1)
               UPDATE workset_runs SET released_at = clock_timestamp(), outcome = $3
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


# The clusters (their columns and load, by name) and the regions' health, as one JSON value: what
# `placement_view_and_clusters` reads, for `waiting_queues` to bring along.
_PLACEMENT_SQL = """SELECT json_build_object(
        'clusters', (SELECT coalesce(json_agg(json_build_object(
                'name', c.name, 'region', c.region, 'executor', c.executor, 'max_concurrent', c.max_concurrent,
                'price_factor', c.price_factor, 'data_locations', c.data_locations, 'status', c.status,
                'config', c.config, 'running', (SELECT count(*) FROM slot_leases l WHERE l.cluster = c.name))
                ORDER BY c.name), '[]') FROM clusters c),
        'regions', (SELECT coalesce(json_agg(json_build_array(region, status, latency_ms)), '[]') FROM region_health))"""


def _placement_of(text: str) -> PlacementView:
    found = json.loads(text)
    records = {
        c["name"]: ClusterRecord(
            name=c["name"],
            region=c["region"],
            executor=c["executor"],
            max_concurrent=c["max_concurrent"],
            price_factor=float(c["price_factor"]),
            data_locations=tuple(c["data_locations"]),
            status=c["status"],
            config=c["config"],
        )
        for c in found["clusters"]
    }
    return PlacementView(
        [_cluster_view({**c, "price_factor": float(c["price_factor"])}) for c in found["clusters"]],
        {region: status for region, status, _ in found["regions"]},
        {region: float(latency) for region, _, latency in found["regions"] if latency is not None},
        records,
    )


def _cluster_view(r: Record | dict[str, Any]) -> ClusterView:
    return ClusterView(
        name=r["name"],
        region=r["region"],
        max_concurrent=r["max_concurrent"],
        running=r["running"],
        price_factor=r["price_factor"],
        data_locations=tuple(r["data_locations"]),
        status=r["status"],
    )


# The head of each (tenant, priority) queue in $1/$2: one descent of worksets_queue_heads each.
_HEADS_SQL = """SELECT head.* FROM unnest($1::text[], $2::text[]) AS q (tenant_id, priority), LATERAL (
        SELECT id, tenant_id, priority, queued_at FROM worksets w
        WHERE w.state = 'queued' AND w.tenant_id = q.tenant_id AND w.priority = q.priority
        ORDER BY w.queued_at, w.id LIMIT 1) head"""

# The head of the one (tenant, priority) queue $1/$2: one descent of worksets_queue_heads.
HEAD_SQL = """SELECT id, tenant_id, priority, queued_at FROM worksets w
        WHERE w.state = 'queued' AND w.tenant_id = $1::text AND w.priority = $2::text
        ORDER BY w.queued_at, w.id LIMIT 1"""

# The buckets a workset's inputs live in (data locality): the bucket of every `s3://` r1/r2 URI of its
# samples, sorted, once each. In SQL, so admission reads a few words per queue head, not its spec.
INPUT_BUCKETS_SQL = """ARRAY(
    SELECT DISTINCT split_part(substr(uri.value #>> '{}', 6), '/', 1) COLLATE "C"
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.spec -> 'samples') = 'array'
                                   THEN w.spec -> 'samples' ELSE '[]'::jsonb END) AS sample,
         LATERAL (VALUES (sample -> 'r1'), (sample -> 'r2')) AS uri (value)
    WHERE jsonb_typeof(sample) = 'object' AND jsonb_typeof(uri.value) = 'string'
      AND starts_with(uri.value #>> '{}', 's3://')
    ORDER BY 1)"""
