"""SlotLedger: what admission reads and writes. The queues waiting (`admission_queues`,
`tenant_admissions`) and their heads, the clusters' load, tenant limits and
region health as admission sees them; the slot leases (`slot_leases`) and the run history they leave
(`workset_runs`). Admission decides under one advisory lock (lock_admission)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from stamen.domain.admission import ClusterView, QueueHead, TenantQueue
from stamen.store.db import Connection

# Admission runs under this transaction-scoped advisory lock: replicas take turns deciding, so the
# counts they read cannot be stale when they insert a lease.
ADMISSION_LOCK_ID = 0x5354414D01


class SlotLedger:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock_admission(self) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_LOCK_ID)

    async def waiting_queues(self) -> tuple[list[TenantQueue], dict[str, datetime], dict[str, int]]:
        """Every (tenant, priority) with a workset queued, when each of their tenants was last admitted,
        and those tenants' own quotas (`tenant_limits`; without a row, the deployment's default).

        One read of three small tables: `admission_queues` and `tenant_admissions` are kept by triggers
        in the transactions that queue, dequeue and admit (migration 0021), so the cost grows with the
        number of queues, not with the queue's depth or the history, and no index is descended per queue.
        In no particular order: the order is `next_queues`'s."""
        rows = await self._conn.fetch(
            """SELECT q.tenant_id, q.priority, a.last_admitted_at, l.max_concurrent
               FROM admission_queues q
               LEFT JOIN tenant_admissions a ON a.tenant_id = q.tenant_id
               LEFT JOIN tenant_limits l ON l.tenant_id = q.tenant_id"""
        )
        queues = [TenantQueue(r["tenant_id"], r["priority"]) for r in rows]
        last = {r["tenant_id"]: r["last_admitted_at"] for r in rows if r["last_admitted_at"] is not None}
        quotas = {r["tenant_id"]: r["max_concurrent"] for r in rows if r["max_concurrent"] is not None}
        return queues, last, quotas

    async def queue_heads(self, queues: Sequence[TenantQueue]) -> list[QueueHead]:
        """The oldest queued workset of each of `queues`: one descent of the partial index
        worksets_queue_heads (tenant_id, priority, queued_at, id) per queue, index-only. What admission
        places by (the preferred cluster, the input buckets) is read for the one head it takes
        (`head_facts`)."""
        rows = await self._conn.fetch(
            """SELECT head.* FROM unnest($1::text[], $2::text[]) AS q (tenant_id, priority), LATERAL (
                   SELECT id, tenant_id, priority, queued_at FROM worksets w
                   WHERE w.state = 'queued' AND w.tenant_id = q.tenant_id AND w.priority = q.priority
                   ORDER BY w.queued_at, w.id LIMIT 1) head
               ORDER BY head.tenant_id, head.priority""",
            [q.tenant_id for q in queues],
            [q.priority for q in queues],
        )
        return [
            QueueHead(
                workset_id=r["id"], tenant_id=r["tenant_id"], priority=r["priority"], queued_at=r["queued_at"]
            )
            for r in rows
        ]

    async def head_facts(self, head: QueueHead) -> QueueHead:
        """`head` with what placement scores: its preferred cluster and input buckets (from its spec)."""
        row = await self._conn.fetchrow(
            f"""SELECT w.spec ->> 'preferred_cluster' AS preferred_cluster, {_INPUT_BUCKETS_SQL} AS buckets
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
