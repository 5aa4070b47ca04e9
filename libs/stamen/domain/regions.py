"""Region health as pure code: probe results in, a status with hysteresis out.

Each probe round of a region gives one verdict (what that round alone says). The status the rest of
stamen acts on moves only when the verdicts agree for long enough: `fail_after` consecutive rounds at
least as bad to get worse, `recover_after` consecutive rounds at least as good to get better. A probe
that fails every other round therefore never moves the status, in either direction.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

# An AWS-style region name (us-west-2, eu-central-1, us-gov-west-1): the regions file's and the
# clusters' (stamen.domain.clusters) one rule.
REGION_NAME_REGEX = r"^[a-z]{2}(-[a-z]+)+-\d$"
# The region_operations audit trail (its CHECKs): operators' forced failovers and fail-backs, and the
# regions service's database promotions, switchovers, fencing and synchronous-mode changes.
RegionOperationKind = Literal[
    "failover", "failback", "database_promotion", "database_switchover", "database_fencing", "database_sync"
]
RegionOperationOutcome = Literal["requested", "done", "failed"]  # requested: an operator's, not yet done


class RegionStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # slow, lagging, or some non-critical probes failing: scored lower
    DOWN = "down"  # critical probes failing; its clusters take no work, its running work moves (regions_to_avoid)

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {RegionStatus.HEALTHY: 0, RegionStatus.DEGRADED: 1, RegionStatus.DOWN: 2}


def regions_to_avoid(health: Mapping[str, str], active_cluster_regions: Iterable[str]) -> set[str]:
    """The down regions whose clusters take no new work and whose running work moves: all of them while an
    active cluster in a region that is not down can take the work, none when there is nowhere else to go
    (a one-region stack through a NATS or PostgreSQL outage keeps working where it is). The scheduler's
    claims of undispatched and stranded worksets apply the same rule in SQL (store/step_runs.py)."""
    down = {region for region, status in health.items() if status == RegionStatus.DOWN}
    elsewhere = any(region not in down for region in active_cluster_regions)
    return down if elsewhere else set()


_BY_SEVERITY = {v: k for k, v in _SEVERITY.items()}


class ProbeKind(StrEnum):
    S3 = "s3"  # head the region's control bucket
    NATS = "nats"  # a round trip to the region's NATS servers
    POSTGRES = "postgres"  # a query; replication role and lag
    CLUSTER = "cluster"  # each cluster head: Slurm ping, or the local machine's work folder


@dataclass(frozen=True)
class ProbeResult:
    kind: ProbeKind
    target: str  # what was probed: bucket, server, host:port, cluster name
    ok: bool
    latency_ms: float | None = None
    detail: str = ""  # why it failed, or what it saw
    facts: Mapping[str, Any] = field(default_factory=dict)  # e.g. role, lag_seconds (PostgreSQL)

    def describe(self) -> str:
        return f"{self.kind.value} {self.target}: {self.detail or ('ok' if self.ok else 'failed')}"


@dataclass(frozen=True)
class HealthPolicy:
    fail_after: int = 3  # consecutive rounds at least this bad before the status gets worse
    recover_after: int = 3  # consecutive rounds at least this good before it gets better
    degraded_latency_ms: float = 250.0  # moving average above this: degraded
    max_replication_lag_seconds: float = 30.0  # a standby further behind: degraded
    critical: frozenset[ProbeKind] = frozenset({ProbeKind.POSTGRES, ProbeKind.NATS})
    window: int = 60  # latency samples kept for the moving average and percentiles

    def __post_init__(self) -> None:
        if self.fail_after < 1 or self.recover_after < 1 or self.window < 1:
            raise ValueError("fail_after, recover_after and window must be at least 1")


@dataclass(frozen=True)
class Verdict:
    """What one probe round alone says about a region."""

    status: RegionStatus
    reason: str
    latency_ms: float | None  # mean latency of the probes that answered


def judge_round(results: Sequence[ProbeResult], policy: HealthPolicy, average_ms: float | None) -> Verdict:
    """down: a critical probe failed, or every probe did; degraded: some other probe failed, a standby
    lags, or the moving-average latency (`average_ms`, this round included) is over the threshold."""
    answered = [r.latency_ms for r in results if r.ok and r.latency_ms is not None]
    latency = sum(answered) / len(answered) if answered else None
    if not results:
        return Verdict(RegionStatus.DOWN, "no probe could be run", None)
    failed = [r for r in results if not r.ok]
    critical = [r for r in failed if r.kind in policy.critical]
    if critical or len(failed) == len(results):
        return Verdict(RegionStatus.DOWN, "; ".join(r.describe() for r in critical or failed), latency)
    if failed:
        return Verdict(RegionStatus.DEGRADED, "; ".join(r.describe() for r in failed), latency)
    lagging = [
        r for r in results if float(r.facts.get("lag_seconds") or 0.0) > policy.max_replication_lag_seconds
    ]
    if lagging:
        worst = max(float(r.facts["lag_seconds"]) for r in lagging)
        return Verdict(
            RegionStatus.DEGRADED,
            f"replication lag {worst:.1f}s is over {policy.max_replication_lag_seconds:g}s",
            latency,
        )
    if average_ms is not None and average_ms > policy.degraded_latency_ms:
        return Verdict(
            RegionStatus.DEGRADED,
            f"latency {average_ms:.1f} ms (moving average) is over {policy.degraded_latency_ms:g} ms",
            latency,
        )
    return Verdict(RegionStatus.HEALTHY, f"{len(results)} probes answered", latency)


def percentile(samples: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0-100) by the nearest-rank method; None without samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class LatencyStats:
    average_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    samples: int


class LatencyWindow:
    """The last `size` latency samples: their moving average and percentiles."""

    def __init__(self, size: int) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, latency_ms: float | None) -> None:
        if latency_ms is not None:
            self._samples.append(latency_ms)

    def stats(self) -> LatencyStats:
        samples = list(self._samples)
        return LatencyStats(
            average_ms=sum(samples) / len(samples) if samples else None,
            p50_ms=percentile(samples, 50),
            p95_ms=percentile(samples, 95),
            p99_ms=percentile(samples, 99),
            samples=len(samples),
        )


@dataclass(frozen=True)
class StatusChange:
    region: str
    previous: RegionStatus
    status: RegionStatus
    reason: str
    at: datetime  # when the tracker decided, which may be before it could be written down


@dataclass(frozen=True)
class Assessment:
    """One round's outcome: the verdict, the (possibly unchanged) status and the latency so far."""

    region: str
    verdict: Verdict
    status: RegionStatus
    latency: LatencyStats
    results: tuple[ProbeResult, ...]
    change: StatusChange | None
    at: datetime


class RegionHealthTracker:
    """One region's status with hysteresis. Starts from the status last recorded (a restart changes
    nothing until enough new rounds agree)."""

    def __init__(
        self, region: str, policy: HealthPolicy, status: RegionStatus = RegionStatus.HEALTHY
    ) -> None:
        self.region = region
        self.policy = policy
        self.status = status
        self._verdicts: deque[Verdict] = deque(maxlen=max(policy.fail_after, policy.recover_after))
        self._latency = LatencyWindow(policy.window)

    def observe(self, results: Sequence[ProbeResult], at: datetime) -> Assessment:
        verdict_latency = [r.latency_ms for r in results if r.ok and r.latency_ms is not None]
        self._latency.add(sum(verdict_latency) / len(verdict_latency) if verdict_latency else None)
        stats = self._latency.stats()
        verdict = judge_round(results, self.policy, stats.average_ms)
        self._verdicts.append(verdict)
        change = self._move(at)
        return Assessment(self.region, verdict, self.status, stats, tuple(results), change, at)

    def _move(self, at: datetime) -> StatusChange | None:
        recent = list(self._verdicts)
        previous = self.status
        worse = _agreed(recent, self.policy.fail_after, min)
        better = _agreed(recent, self.policy.recover_after, max)
        if worse is not None and worse.severity > previous.severity:
            self.status = worse
            rounds = self.policy.fail_after
        elif better is not None and better.severity < previous.severity:
            self.status = better
            rounds = self.policy.recover_after
        else:
            return None
        latest = recent[-1]
        reason = f"{rounds} consecutive rounds {self.status.value} or {'worse' if self.status.severity > previous.severity else 'better'}: {latest.reason}"
        return StatusChange(self.region, previous, self.status, reason, at)


def _agreed(recent: list[Verdict], rounds: int, pick: Any) -> RegionStatus | None:
    """Of the last `rounds` verdicts, the least bad (pick=min) or the worst (pick=max) severity; None
    until there are that many."""
    if len(recent) < rounds:
        return None
    return _BY_SEVERITY[pick(v.status.severity for v in recent[-rounds:])]
