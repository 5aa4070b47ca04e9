"""Request and response models of the region routes (/api/v1/regions...)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from services.portal.api.models import Body, inline_enum
from stamen.domain.regions import RegionStatus

RegionHealth = Annotated[RegionStatus, inline_enum(RegionStatus)]


class Latency(BaseModel):
    average: float | None = Field(description="Moving average of the probe rounds' latency, ms.")
    p50: float | None
    p95: float | None
    p99: float | None


class RegionOut(BaseModel):
    region: str
    configured: bool = Field(description="The region this deployment is configured for (STAMEN_REGION).")
    primary: bool = Field(description="The primary region of the registry.")
    registered: bool = Field(description="In the regions service's registry (its probes watch it).")
    clusters: list[str]
    health: RegionHealth = Field(
        description="The health admission uses: the region's row in region_health, or healthy when it has "
        "none (see health_reported). down: its clusters take no new worksets and its running worksets move "
        "elsewhere; degraded: they score lower."
    )
    health_reported: bool = Field(
        description="False when nothing has reported on the region (no region_health row): it counts as healthy."
    )
    since: datetime | None = Field(description="When the health last changed.")
    latency_ms: Latency
    forced_by: str | None = Field(description="The operator who forced it down (a forced failover), if any.")
    reason: str | None = Field(description="Why it has this health (operators only; null for customers).")


class RegionList(BaseModel):
    items: list[RegionOut]
    note: str


class ProbeOut(BaseModel):
    kind: str
    target: str
    ok: bool
    latency_ms: float | None
    detail: str
    facts: dict[str, Any] = Field(description="What the probe saw, e.g. a database's role and lag.")


class RegionChangeOut(BaseModel):
    id: int
    region: str
    from_status: str | None
    to_status: str
    reason: str
    actor: str
    latency_ms: float | None
    at: datetime = Field(description="When the change was decided.")
    recorded_at: datetime = Field(description="When it was written (later if the database was failing over).")


class RegionOperationOut(BaseModel):
    id: int
    region: str
    kind: str = Field(
        description="failover | failback | database_promotion | database_switchover | "
        "database_fencing | database_sync"
    )
    actor: str
    reason: str
    outcome: str = Field(description="requested | done | failed")
    detail: dict[str, Any]
    at: datetime


class RegionDetail(RegionOut):
    last_round: dict[str, Any] | None = Field(description="The last probe round's own verdict and reason.")
    probes: list[ProbeOut]
    endpoints: dict[str, Any] | None
    history: list[RegionChangeOut]
    operations: list[RegionOperationOut]


class RegionHistory(BaseModel):
    changes: list[RegionChangeOut]
    operations: list[RegionOperationOut]


class RegionHistoryQuery(Body):
    limit: int = Field(default=100, ge=1, le=1000)


class FailoverRequest(Body):
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept in the audit trail).")


class FailbackRequest(Body):
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept in the audit trail).")
    database: bool = Field(default=False, description="Also move the database primary back to this region.")


class RegionCommandOut(BaseModel):
    region: str
    operation_id: int = Field(description="The audit row (GET /regions/{region}/history lists it).")
    previous: str
    status: str
    forced_by: str | None
    switchover_requested: bool
