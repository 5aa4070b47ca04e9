"""RegionRepository: the region registry, region health, its history and the failover audit trail.

Writers: the regions service (registry, health, history, database operations) and the operator
commands in `stamen.regions.commands` (forced failover, fail-back). Readers: scheduler admission (through
SlotLedger), the CLI and the portal API (`overview`, `history`, `operations`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stamen.domain.regions import RegionOperationKind, RegionOperationOutcome, RegionStatus
from stamen.store.db import Connection


@dataclass(frozen=True)
class RegionRecord:
    """One region of the registry, without credentials."""

    name: str
    is_primary: bool = False
    s3_endpoint: str | None = None
    control_bucket: str | None = None
    nats_servers: tuple[str, ...] = ()
    postgres_endpoint: str | None = None  # host:port
    clusters: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegionHealthRow:
    region: str
    status: RegionStatus
    reason: str
    changed_at: datetime
    updated_at: datetime
    latency_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    verdict: RegionStatus | None = None
    verdict_reason: str = ""
    probes: list[dict[str, Any]] = field(default_factory=list)
    probed_at: datetime | None = None
    forced_by: str | None = None
    forced_reason: str | None = None


@dataclass(frozen=True)
class RegionHistoryRow:
    id: int
    region: str
    from_status: str | None
    to_status: str
    reason: str
    actor: str
    latency_ms: float | None
    probes: list[dict[str, Any]]
    event_id: uuid.UUID | None
    at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class RegionOperationRow:
    id: int
    region: str
    kind: str
    actor: str
    reason: str
    outcome: str
    detail: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class RegionOverview:
    """What the CLI and the portal show per region: registry, clusters and health in one read."""

    region: str
    registered: bool  # in the regions service's registry (else known only from clusters or health)
    is_primary: bool
    clusters: tuple[str, ...]
    health: RegionHealthRow | None  # None: nothing has reported on it, which counts as healthy
    record: RegionRecord | None

    @property
    def status(self) -> RegionStatus:
        return self.health.status if self.health else RegionStatus.HEALTHY


def _health(r: Any) -> RegionHealthRow:
    return RegionHealthRow(
        region=r["region"],
        status=RegionStatus(r["status"]),
        reason=r["reason"],
        changed_at=r["changed_at"],
        updated_at=r["updated_at"],
        latency_ms=r["latency_ms"],
        latency_p50_ms=r["latency_p50_ms"],
        latency_p95_ms=r["latency_p95_ms"],
        latency_p99_ms=r["latency_p99_ms"],
        verdict=RegionStatus(r["verdict"]) if r["verdict"] else None,
        verdict_reason=r["verdict_reason"],
        probes=json.loads(r["probes"]),
        probed_at=r["probed_at"],
        forced_by=r["forced_by"],
        forced_reason=r["forced_reason"],
    )


def _record(r: Any) -> RegionRecord:
    return RegionRecord(
        name=r["name"],
        is_primary=r["is_primary"],
        s3_endpoint=r["s3_endpoint"],
        control_bucket=r["control_bucket"],
        nats_servers=tuple(r["nats_servers"]),
        postgres_endpoint=r["postgres_endpoint"],
        clusters=tuple(r["clusters"]),
    )


class RegionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- registry ------------------------------------------------------------------------------

    async def sync_registry(self, records: Sequence[RegionRecord]) -> None:
        """The registry becomes exactly `records` (regions dropped from the file leave it; their
        health history stays)."""
        for r in records:
            await self._conn.execute(
                """INSERT INTO regions (name, is_primary, s3_endpoint, control_bucket, nats_servers,
                                        postgres_endpoint, clusters)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (name) DO UPDATE SET is_primary = $2, s3_endpoint = $3, control_bucket = $4,
                       nats_servers = $5, postgres_endpoint = $6, clusters = $7, updated_at = now()""",
                r.name,
                r.is_primary,
                r.s3_endpoint,
                r.control_bucket,
                list(r.nats_servers),
                r.postgres_endpoint,
                list(r.clusters),
            )
        await self._conn.execute(
            "DELETE FROM regions WHERE NOT (name = ANY($1::text[]))", [r.name for r in records]
        )

    async def registry(self) -> list[RegionRecord]:
        return [_record(r) for r in await self._conn.fetch("SELECT * FROM regions ORDER BY name")]

    # -- health --------------------------------------------------------------------------------

    async def health(self) -> dict[str, RegionHealthRow]:
        rows = await self._conn.fetch("SELECT * FROM region_health ORDER BY region")
        return {r["region"]: _health(r) for r in rows}

    async def lock_health(self, region: str) -> RegionHealthRow | None:
        row = await self._conn.fetchrow("SELECT * FROM region_health WHERE region = $1 FOR UPDATE", region)
        return _health(row) if row else None

    async def save_probe_round(
        self,
        region: str,
        *,
        verdict: RegionStatus,
        verdict_reason: str,
        latency: tuple[float | None, float | None, float | None, float | None],
        probes: list[dict[str, Any]],
        probed_at: datetime,
    ) -> None:
        """What the last round measured. The status is not touched (a new region starts healthy)."""
        await self._conn.execute(
            """INSERT INTO region_health (region, status, reason, verdict, verdict_reason, latency_ms,
                   latency_p50_ms, latency_p95_ms, latency_p99_ms, probes, probed_at)
               VALUES ($1, 'healthy', 'first probe round', $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
               ON CONFLICT (region) DO UPDATE SET verdict = $2, verdict_reason = $3, latency_ms = $4,
                   latency_p50_ms = $5, latency_p95_ms = $6, latency_p99_ms = $7, probes = $8::jsonb,
                   probed_at = $9, updated_at = now()""",
            region,
            verdict.value,
            verdict_reason,
            *latency,
            json.dumps(probes),
            probed_at,
        )

    async def change_status(
        self,
        region: str,
        *,
        previous: RegionStatus | None,
        status: RegionStatus,
        reason: str,
        actor: str,
        at: datetime,
        latency_ms: float | None = None,
        probes: list[dict[str, Any]] | None = None,
        event_id: uuid.UUID | None = None,
    ) -> None:
        """The region's status changes: its row and a history row, in the caller's transaction (with
        the region.health_changed event it publishes)."""
        await self._conn.execute(
            """INSERT INTO region_health (region, status, reason, changed_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (region) DO UPDATE SET status = $2, reason = $3, changed_at = $4, updated_at = now()""",
            region,
            status.value,
            reason,
            at,
        )
        await self._conn.execute(
            """INSERT INTO region_health_history (region, from_status, to_status, reason, actor, latency_ms,
                   probes, event_id, at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)""",
            region,
            previous.value if previous else None,
            status.value,
            reason,
            actor,
            latency_ms,
            json.dumps(probes or []),
            event_id,
            at,
        )

    async def set_forced(self, region: str, actor: str | None, reason: str | None) -> None:
        """An operator's override (forced failover), or None to clear it (fail-back)."""
        await self._conn.execute(
            """INSERT INTO region_health (region, status, reason, forced_by, forced_reason)
               VALUES ($1, 'healthy', 'no probe round yet', $2, $3)
               ON CONFLICT (region) DO UPDATE SET forced_by = $2, forced_reason = $3, updated_at = now()""",
            region,
            actor,
            reason,
        )

    async def history(
        self, region: str | None = None, *, limit: int = 100, before_id: int | None = None
    ) -> list[RegionHistoryRow]:
        rows = await self._conn.fetch(
            """SELECT * FROM region_health_history
               WHERE ($1::text IS NULL OR region = $1) AND ($3::bigint IS NULL OR id < $3)
               ORDER BY at DESC, id DESC LIMIT $2""",
            region,
            limit,
            before_id,
        )
        return [
            RegionHistoryRow(
                id=r["id"],
                region=r["region"],
                from_status=r["from_status"],
                to_status=r["to_status"],
                reason=r["reason"],
                actor=r["actor"],
                latency_ms=r["latency_ms"],
                probes=json.loads(r["probes"]),
                event_id=r["event_id"],
                at=r["at"],
                recorded_at=r["recorded_at"],
            )
            for r in rows
        ]

    async def down_since(self) -> dict[str, datetime]:
        """Regions that are down, and since when (for the scheduler: re-route now, lose running work later)."""
        rows = await self._conn.fetch("SELECT region, changed_at FROM region_health WHERE status = 'down'")
        return {r["region"]: r["changed_at"] for r in rows}

    # -- audit trail ---------------------------------------------------------------------------

    async def add_operation(
        self,
        region: str,
        kind: RegionOperationKind,
        *,
        actor: str,
        reason: str = "",
        outcome: RegionOperationOutcome = "done",
        detail: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        op_id: int = await self._conn.fetchval(
            """INSERT INTO region_operations (region, kind, actor, reason, outcome, detail, at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, coalesce($7, now())) RETURNING id""",
            region,
            kind,
            actor,
            reason,
            outcome,
            json.dumps(detail or {}, default=str),
            at,
        )
        return op_id

    async def finish_operation(
        self, op_id: int, outcome: RegionOperationOutcome, detail: dict[str, Any]
    ) -> None:
        await self._conn.execute(
            "UPDATE region_operations SET outcome = $2, detail = detail || $3::jsonb WHERE id = $1",
            op_id,
            outcome,
            json.dumps(detail, default=str),
        )

    async def requested_operations(self, kind: RegionOperationKind) -> list[RegionOperationRow]:
        rows = await self._conn.fetch(
            "SELECT * FROM region_operations WHERE outcome = 'requested' AND kind = $1 ORDER BY id FOR UPDATE SKIP LOCKED",
            kind,
        )
        return [_operation(r) for r in rows]

    async def operations(self, region: str | None = None, *, limit: int = 100) -> list[RegionOperationRow]:
        rows = await self._conn.fetch(
            """SELECT * FROM region_operations WHERE ($1::text IS NULL OR region = $1)
               ORDER BY at DESC, id DESC LIMIT $2""",
            region,
            limit,
        )
        return [_operation(r) for r in rows]

    # -- the read model ------------------------------------------------------------------------

    async def overview(self) -> list[RegionOverview]:
        """Every region known from the registry, the cluster registry or a health report."""
        records = {r.name: r for r in await self.registry()}
        health = await self.health()
        clusters: dict[str, list[str]] = {}
        for r in await self._conn.fetch("SELECT name, region FROM clusters ORDER BY name"):
            clusters.setdefault(r["region"], []).append(r["name"])
        names = sorted({*records, *health, *clusters})
        return [
            RegionOverview(
                region=name,
                registered=name in records,
                is_primary=bool(records.get(name) and records[name].is_primary),
                clusters=tuple(
                    sorted({*clusters.get(name, []), *(records[name].clusters if name in records else ())})
                ),
                health=health.get(name),
                record=records.get(name),
            )
            for name in names
        ]


def _operation(r: Any) -> RegionOperationRow:
    return RegionOperationRow(
        id=r["id"],
        region=r["region"],
        kind=r["kind"],
        actor=r["actor"],
        reason=r["reason"],
        outcome=r["outcome"],
        detail=json.loads(r["detail"]),
        at=r["at"],
    )
