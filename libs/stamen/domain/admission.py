"""Admission and placement as pure functions: who runs next, and where.

Order: priority (urgent > normal > low), then fair share between tenants (the tenant with fewer
worksets running, then the one admitted least recently, goes first: a tenant with 1,000 queued
does not block another tenant's one), then age. Only the head of each tenant's queue per priority
competes, so the cost of a decision does not grow with a tenant's backlog; and which queue's head that is
follows from the queues alone (tenant, priority, the tenant's running count and last admission), so only
the heads of the queues in front need to be read (`next_queues`, then `next_head` on their heads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from stamen.domain.regions import RegionStatus, regions_to_avoid

PRIORITY_RANK: dict[str, int] = {"urgent": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class QueueHead:
    workset_id: str
    tenant_id: str
    priority: str
    queued_at: datetime
    preferred_cluster: str | None = None
    data_locations: tuple[str, ...] = ()  # buckets / regions the inputs live in


class TenantQueue(NamedTuple):
    """One tenant's queued worksets of one priority: a queue with at least one workset in it. A named
    tuple: admission builds one per queue waiting on every decision (hundreds)."""

    tenant_id: str
    priority: str


@dataclass(frozen=True)
class ClusterView:
    name: str
    region: str
    max_concurrent: int
    running: int
    price_factor: float = 1.0
    data_locations: tuple[str, ...] = ()
    status: str = "active"

    @property
    def free(self) -> int:
        return max(0, self.max_concurrent - self.running)


@dataclass(frozen=True)
class Occupancy:
    total: int
    by_tenant: Mapping[str, int]


@dataclass(frozen=True)
class Limits:
    global_max: int
    tenant_max: Mapping[str, int]
    default_tenant_max: int

    def for_tenant(self, tenant_id: str) -> int:
        return self.tenant_max.get(tenant_id, self.default_tenant_max)


@dataclass(frozen=True)
class ClusterScore:
    cluster: str
    total: float
    parts: dict[str, float]
    eligible: bool
    why_not: str = ""


@dataclass(frozen=True)
class Placement:
    workset_id: str
    tenant_id: str
    cluster: str
    reason: str
    scores: dict[str, float] = field(default_factory=dict)


# Weights of the affinity score; locality dominates because egress is the largest avoidable cost.
WEIGHTS = {"locality": 4.0, "price": 2.0, "capacity": 1.0, "health": 3.0, "preference": 5.0, "latency": 2.0}
HEALTH_SCORE: dict[str, float] = {
    RegionStatus.HEALTHY: 1.0,
    RegionStatus.DEGRADED: 0.3,
    RegionStatus.DOWN: 0.0,
}
# Below this, latencies count as equal (loopback, one data centre): no preference for noise.
LATENCY_FLOOR_MS = 5.0


def latency_part(region: str, region_latency: Mapping[str, float]) -> float:
    """1.0 for the fastest region measured, less for slower ones (fastest/latency); 0.5 for a region
    nobody measured while others were, 1.0 for all when nothing was measured."""
    if region not in region_latency:
        return 0.5 if region_latency else 1.0
    fastest = max(min(region_latency.values()), LATENCY_FLOOR_MS)
    return fastest / max(region_latency[region], LATENCY_FLOOR_MS)


def score_clusters(
    head: QueueHead,
    clusters: Iterable[ClusterView],
    region_health: Mapping[str, str] | None = None,
    region_latency: Mapping[str, float] | None = None,
) -> list[ClusterScore]:
    """Score every cluster for one workset, best first; ineligible ones last with the reason.

    region_health: status per region (no entry: healthy); region_latency: the regions service's
    moving-average probe latency per region in ms (lower scores higher)."""
    health = region_health or {}
    latency = region_latency or {}
    views = list(clusters)
    avoided = regions_to_avoid(health, (c.region for c in views if c.status == "active"))
    cheapest = min((c.price_factor for c in views), default=1.0)
    scores = []
    for c in views:
        why_not = ""
        if c.status != "active":
            why_not = f"cluster is {c.status}"
        elif c.free <= 0:
            why_not = "cluster is full"
        elif c.region in avoided:
            why_not = f"region {c.region} is down"
        wanted = set(head.data_locations)
        local = wanted & (set(c.data_locations) | {c.region})
        parts = {
            "locality": (len(local) / len(wanted)) if wanted else 1.0,
            "price": cheapest / c.price_factor,
            "capacity": c.free / c.max_concurrent if c.max_concurrent else 0.0,
            "health": HEALTH_SCORE.get(health.get(c.region, RegionStatus.HEALTHY), 0.5),
            "preference": 1.0 if head.preferred_cluster == c.name else 0.0,
            "latency": latency_part(c.region, latency),
        }
        total = sum(WEIGHTS[k] * v for k, v in parts.items())
        scores.append(ClusterScore(c.name, round(total, 4), parts, not why_not, why_not))
    # Ties go to the cluster name so two replicas make the same choice.
    return sorted(scores, key=lambda s: (not s.eligible, -s.total, s.cluster))


def _standing(
    tenant_id: str, running: Mapping[str, int], last_admitted: Mapping[str, datetime]
) -> tuple[int, datetime]:
    """A tenant's place in fair share, the same for all its queues: fewer running first, then the one
    admitted least recently (never admitted: first)."""
    last = last_admitted.get(tenant_id)
    return running.get(tenant_id, 0), last.replace(tzinfo=None) if last else datetime.min


def order_heads(
    heads: Iterable[QueueHead], running: Mapping[str, int], last_admitted: Mapping[str, datetime]
) -> list[QueueHead]:
    """Priority, then fair share (`_standing`), then age, then the id."""

    def key(h: QueueHead) -> tuple[int, tuple[int, datetime], datetime, str]:
        return (
            PRIORITY_RANK.get(h.priority, 1),
            _standing(h.tenant_id, running, last_admitted),
            h.queued_at.replace(tzinfo=None),
            h.workset_id,
        )

    return sorted(heads, key=key)


def next_queues(
    queues: Iterable[TenantQueue], occupancy: Occupancy, limits: Limits, last_admitted: Mapping[str, datetime]
) -> list[TenantQueue]:
    """The queues whose heads compete for the next admission: of the queues whose tenant is under its
    quota, those in front by priority and fair share (usually one; several only when tenants tie on
    running and last admission, and then their heads' age decides). `next_head` over these queues'
    heads picks what `next_head` over every queue's head would: a tenant's quota and fair-share place
    are the same for all its queues, so any head behind the front queues' is behind their heads too.
    Empty when nothing may start. Each tenant's standing is worked out once (hundreds of queues are
    ordered on every decision)."""
    if occupancy.total >= limits.global_max:
        return []
    standing: dict[str, tuple[int, datetime] | None] = {}  # None: at its quota
    front: list[TenantQueue] = []
    best: tuple[int, tuple[int, datetime]] | None = None
    for q in queues:
        if q.tenant_id in standing:
            place_ = standing[q.tenant_id]
        else:
            held = occupancy.by_tenant.get(q.tenant_id, 0)
            allowed = held < limits.for_tenant(q.tenant_id)
            place_ = standing[q.tenant_id] = (
                _standing(q.tenant_id, occupancy.by_tenant, last_admitted) if allowed else None
            )
        if place_ is None:
            continue
        key = (PRIORITY_RANK.get(q.priority, 1), place_)
        if best is None or key < best:
            best, front = key, [q]
        elif key == best:
            front.append(q)
    return sorted(front)


def choose_admission(
    heads: Sequence[QueueHead],
    clusters: Sequence[ClusterView],
    occupancy: Occupancy,
    limits: Limits,
    last_admitted: Mapping[str, datetime],
    region_health: Mapping[str, str] | None = None,
    region_latency: Mapping[str, float] | None = None,
) -> Placement | None:
    """The next workset to admit and its cluster, or None if nothing may start now."""
    head = next_head(heads, occupancy, limits, last_admitted)
    return None if head is None else place(head, clusters, region_health, region_latency)


def next_head(
    heads: Sequence[QueueHead], occupancy: Occupancy, limits: Limits, last_admitted: Mapping[str, datetime]
) -> QueueHead | None:
    """The head admission takes next, if anything may start: the first in order whose tenant is under
    its quota. Where it goes does not change which head that is (a cluster's eligibility depends on the
    cluster and the regions, never on the workset), so only this head's facts (preferred cluster, input
    buckets) need to be read to place it."""
    if occupancy.total >= limits.global_max:
        return None
    for head in order_heads(heads, occupancy.by_tenant, last_admitted):
        if occupancy.by_tenant.get(head.tenant_id, 0) < limits.for_tenant(head.tenant_id):
            return head
    return None


def place(
    head: QueueHead,
    clusters: Sequence[ClusterView],
    region_health: Mapping[str, str] | None = None,
    region_latency: Mapping[str, float] | None = None,
) -> Placement | None:
    """The best eligible cluster for `head`, with the reason and every eligible cluster's score; None
    when no cluster is eligible (then none is for any other head either)."""
    scores = score_clusters(head, clusters, region_health, region_latency)
    best = scores[0] if scores else None
    if best is None or not best.eligible:
        return None
    runner_up = next((s for s in scores[1:] if s.eligible), None)
    reason = (
        f"highest affinity {best.total:.2f}"
        + (f" vs {runner_up.cluster} {runner_up.total:.2f}" if runner_up else " (only eligible cluster)")
        + "; " + ", ".join(f"{k}={v:.2f}" for k, v in best.parts.items())
        + _rerouted(head, scores)
    )  # fmt: skip
    return Placement(
        head.workset_id,
        head.tenant_id,
        best.cluster,
        reason,
        {s.cluster: s.total for s in scores if s.eligible},
    )


def _rerouted(head: QueueHead, scores: Sequence[ClusterScore]) -> str:
    """Why a workset did not go where it was bound: its preferred cluster's region is down."""
    wanted = next((s for s in scores if s.cluster == head.preferred_cluster), None)
    if wanted is None or wanted.eligible or "region" not in wanted.why_not:
        return ""
    return f"; re-routed: preferred cluster {wanted.cluster} is not eligible ({wanted.why_not})"


def room_after(
    placement: Placement, clusters: Sequence[ClusterView], occupancy: Occupancy, limits: Limits
) -> bool:
    """Whether a slot may still be free once `placement` holds one: under the global limit, and some
    active cluster with room. When not, admission need not ask again until a slot is given back."""
    if occupancy.total + 1 >= limits.global_max:
        return False
    return any(c.status == "active" and c.free > (1 if c.name == placement.cluster else 0) for c in clusters)
