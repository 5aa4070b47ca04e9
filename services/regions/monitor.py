"""The health monitor: probe every region each interval, move each region's status with hysteresis,
and record what changed (region_health, its history, region.health_changed) in one transaction.

It decides without the database: the trackers live in memory, so a region whose PostgreSQL is the one
that died is still judged, the database failover coordinator still acts, and what was decided while
nothing could be written is kept in order and written (with the time it was decided) once the
database takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from services.regions.failover import DatabaseFailover, Operation
from services.regions.probes import ClusterProbe, NatsProbe, PostgresProbe, Probe, S3Probe, run_probe
from stamen.bus.subjects import PLATFORM_TENANT
from stamen.domain.regions import (
    Assessment,
    HealthPolicy,
    ProbeKind,
    ProbeResult,
    RegionHealthTracker,
    RegionStatus,
)
from stamen.events.envelope import Envelope, new_envelope
from stamen.events.types import RegionHealthChanged
from stamen.regions.registry import PostgresUrl, RegionRegistry, nats_url_for, strip_credentials
from stamen.settings import Settings
from stamen.store.clusters import ClusterRecord
from stamen.store.regions import RegionOperationRow
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class ProbeSet:
    """Every region's probes, built from the registry and the cluster registry."""

    def __init__(self, registry: RegionRegistry, settings: Settings, timeout: float) -> None:
        self._registry = registry
        self._timeout = timeout
        self._fixed: dict[str, list[Probe]] = {}
        for spec in registry.regions:
            probes: list[Probe] = []
            if spec.s3:
                probes.append(S3Probe(spec.s3.control_bucket, spec.s3.endpoint_url, spec.name, timeout))
            if spec.nats:
                servers = [nats_url_for(s, settings.nats_url) for s in spec.nats.servers]
                probes.append(NatsProbe(servers, timeout, ",".join(strip_credentials(s) for s in servers)))
            if spec.postgres and settings.database_url:
                dsn = PostgresUrl.parse(settings.database_url).for_host(
                    spec.postgres.host, spec.postgres.port
                )
                probes.append(PostgresProbe(dsn, spec.postgres.address, timeout))
            self._fixed[spec.name] = probes
        self._clusters: dict[str, ClusterProbe] = {}
        self._cluster_records: dict[str, ClusterRecord] = {}

    @property
    def regions(self) -> list[str]:
        return [r.name for r in self._registry.regions]

    async def update_clusters(self, clusters: Sequence[ClusterRecord]) -> None:
        """Probe each cluster of a registered region; rebuild a probe when its cluster changed."""
        wanted = {c.name: c for c in clusters if c.region in self._fixed}
        for name in list(self._clusters):
            if wanted.get(name) != self._cluster_records.get(name):
                await self._clusters.pop(name).close()
                self._cluster_records.pop(name, None)
        for name, record in wanted.items():
            if name not in self._clusters:
                self._clusters[name] = ClusterProbe(record, self._timeout)
                self._cluster_records[name] = record
                await self._clusters[name].prepare()

    async def prepare(self) -> None:
        for probe in (p for ps in self._fixed.values() for p in ps):
            await probe.prepare()

    def for_region(self, region: str) -> list[Probe]:
        clusters = [p for n, p in sorted(self._clusters.items()) if self._cluster_records[n].region == region]
        return [*self._fixed.get(region, []), *clusters]

    async def close(self) -> None:
        for probe in [*(p for ps in self._fixed.values() for p in ps), *self._clusters.values()]:
            with contextlib.suppress(Exception):
                await probe.close()


def attach_replication_lag(results: dict[str, list[ProbeResult]]) -> dict[str, list[ProbeResult]]:
    """A standby's lag as its primary reports it (pg_stat_replication, by application_name = region)."""
    lag: dict[str, dict[str, Any]] = {}
    for probes in results.values():
        for r in probes:
            if r.kind is ProbeKind.POSTGRES and r.ok and r.facts.get("role") == "primary":
                lag.update({str(s["name"]): s for s in r.facts.get("standbys") or []})
    out: dict[str, list[ProbeResult]] = {}
    for region, probes in results.items():
        out[region] = [
            ProbeResult(r.kind, r.target, r.ok, r.latency_ms, r.detail, {
                **r.facts,
                "lag_seconds": float(lag[region].get("replay_lag_seconds") or 0.0),
                "lag_bytes": float(lag[region].get("lag_bytes") or 0.0),
                "replication": lag[region].get("state"),
            })
            if r.kind is ProbeKind.POSTGRES and r.ok and r.facts.get("role") == "standby" and region in lag
            else r
            for r in probes
        ]  # fmt: skip
    return out


def probe_summary(results: Sequence[ProbeResult]) -> list[dict[str, Any]]:
    keep = ("role", "read_only", "lag_seconds", "lag_bytes", "replication", "server")
    return [
        {"kind": r.kind.value, "target": r.target, "ok": r.ok, "latency_ms": r.latency_ms, "detail": r.detail,
         **{k: r.facts[k] for k in keep if k in r.facts}}
        for r in results
    ]  # fmt: skip


@dataclass(frozen=True)
class PendingChange:
    """A status change decided, to be written with its history row and event."""

    region: str
    previous: RegionStatus | None
    status: RegionStatus
    reason: str
    actor: str
    at: datetime
    latency_ms: float | None
    probes: list[dict[str, Any]]
    event: Envelope


class HealthMonitor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        probes: ProbeSet,
        policy: HealthPolicy,
        *,
        interval: float,
        timeout: float,
        failover: DatabaseFailover | None = None,
        actor: str = "regions",
    ) -> None:
        self._pool = pool
        self._probes = probes
        self._policy = policy
        self._interval = interval
        self._timeout = timeout
        self._failover = failover
        self._actor = actor
        self._trackers: dict[str, RegionHealthTracker] = {}
        self._announced: dict[str, RegionStatus] = {}  # the status last decided (written or pending)
        self._forced: dict[str, tuple[str, str]] = {}  # region -> (operator, reason)
        self._requests: list[RegionOperationRow] = []
        self._pending: list[PendingChange] = []
        self._pending_ops: list[Operation] = []
        self._loaded = False
        self._stopping = asyncio.Event()
        self.last: dict[str, Assessment] = {}

    async def _refresh(self) -> None:
        """What the database says: statuses (first time), overrides, clusters, requested switchovers."""
        async with UnitOfWork(self._pool) as uow:
            health = await uow.regions.health()
            clusters = await uow.clusters.clusters()
            requests = await uow.regions.requested_operations("database_switchover")
        if not self._loaded:
            for region in self._probes.regions:
                row = health.get(region)
                self._announced[region] = row.status if row else RegionStatus.HEALTHY
                initial = row.status if row and not row.forced_by else RegionStatus.HEALTHY
                self._trackers[region] = RegionHealthTracker(region, self._policy, initial)
            self._loaded = True
        unwritten = {c.region for c in self._pending}
        for region, row in health.items():  # an operator command may have changed it meanwhile
            if region in self._announced and region not in unwritten:
                self._announced[region] = row.status
        self._forced = {r: (h.forced_by, h.forced_reason or "") for r, h in health.items() if h.forced_by}
        self._requests = [
            q for q in requests if q.region in self._trackers or q.detail.get("to_region") in self._trackers
        ]
        await self._probes.update_clusters(clusters)

    async def round(self) -> dict[str, Assessment]:
        """One round: refresh from the database and probe every region at the same time (a database that
        does not answer costs the round no more than a probe timeout), then decide, then write."""
        await self._probes.prepare()  # once: later calls find everything built
        if not self._loaded:  # the first round needs the statuses recorded before
            await self._refreshed()
            if not self._loaded:
                return {}
        regions = self._probes.regions

        async def probe(region: str) -> list[ProbeResult]:
            return list(
                await asyncio.gather(*(run_probe(p, self._timeout) for p in self._probes.for_region(region)))
            )

        refresh = asyncio.ensure_future(self._refreshed())
        raw = await asyncio.gather(*(probe(r) for r in regions))
        await refresh
        results = attach_replication_lag(dict(zip(regions, raw, strict=True)))
        now = datetime.now(UTC)
        assessments = {r: self._trackers[r].observe(results[r], now) for r in regions}
        for region, a in assessments.items():
            self._decide(region, a)
        if self._failover is not None:
            postgres = {r: p for r in regions for p in results[r] if p.kind is ProbeKind.POSTGRES}
            requests, self._requests = self._requests, []
            self._pending_ops += await self._failover.after_round(
                self._announced, postgres, set(self._forced), requests
            )
        self.last = assessments
        await self._persist(assessments)
        return assessments

    async def _refreshed(self) -> bool:
        try:
            await asyncio.wait_for(self._refresh(), self._timeout)
        except Exception as exc:  # the database may be the thing that is down: judge with what we had
            log.warning("regions.refresh_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _decide(self, region: str, a: Assessment) -> None:
        forced = self._forced.get(region)
        status = RegionStatus.DOWN if forced else a.status
        previous = self._announced.get(region)
        if status is previous:
            return
        if forced:
            reason = f"forced failover by {forced[0]}: {forced[1]}"
        elif a.change is not None:
            reason = a.change.reason
        else:  # an override was lifted: the probes' status stands (it has met its own hysteresis)
            reason = f"fail-back: the probes say {status.value} ({a.verdict.reason})"
        actor = forced[0] if forced else self._actor
        event = new_envelope(
            RegionHealthChanged(
                status=status.value, latency_ms=a.latency.average_ms, detail=reason,
                previous=previous.value if previous else None, actor=actor,
            ),
            tenant_id=PLATFORM_TENANT,
            region=region,
        )  # fmt: skip
        self._pending.append(
            PendingChange(
                region,
                previous,
                status,
                reason,
                actor,
                a.at,
                a.latency.average_ms,
                probe_summary(a.results),
                event,
            )
        )
        self._announced[region] = status
        log.warning("regions.health_changed", region=region, previous=previous, status=status, reason=reason)

    async def _persist(self, assessments: Mapping[str, Assessment]) -> None:
        try:
            await asyncio.wait_for(self._write(assessments), self._timeout)
        except Exception as exc:
            log.warning(
                "regions.persist_failed", error=f"{type(exc).__name__}: {exc}",
                pending_changes=len(self._pending), pending_operations=len(self._pending_ops),
            )  # fmt: skip
            return
        self._pending.clear()
        self._pending_ops.clear()

    async def _write(self, assessments: Mapping[str, Assessment]) -> None:
        async with UnitOfWork(self._pool) as uow:
            for region, a in assessments.items():
                await uow.regions.save_probe_round(
                    region,
                    verdict=a.verdict.status,
                    verdict_reason=a.verdict.reason,
                    latency=(a.latency.average_ms, a.latency.p50_ms, a.latency.p95_ms, a.latency.p99_ms),
                    probes=probe_summary(a.results),
                    probed_at=a.at,
                )
            for c in self._pending:
                await uow.regions.change_status(
                    c.region, previous=c.previous, status=c.status, reason=c.reason, actor=c.actor, at=c.at,
                    latency_ms=c.latency_ms, probes=c.probes, event_id=c.event.id,
                )  # fmt: skip
                uow.publish(c.event)
            for op in self._pending_ops:
                if op.request_id is not None:
                    await uow.regions.finish_operation(op.request_id, op.outcome, op.detail)
                else:
                    await uow.regions.add_operation(
                        op.region, op.kind, actor=self._actor, reason=op.reason, outcome=op.outcome,
                        detail=op.detail, at=op.at,
                    )  # fmt: skip
            await uow.commit()

    async def run(self) -> None:
        await self._probes.prepare()
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self.round()
            except Exception as exc:  # a bug in one round must not end region health
                log.exception("regions.round_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), max(0.0, self._interval - (time.monotonic() - started))
                )

    def stop(self) -> None:
        self._stopping.set()
