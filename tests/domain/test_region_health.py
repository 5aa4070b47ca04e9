"""Region health as pure code: verdicts, latency statistics, hysteresis, and routing by latency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stamen.domain.admission import (
    ClusterView,
    Limits,
    Occupancy,
    QueueHead,
    choose_admission,
    score_clusters,
)
from stamen.domain.regions import (
    HealthPolicy,
    LatencyWindow,
    ProbeKind,
    ProbeResult,
    RegionHealthTracker,
    RegionStatus,
    judge_round,
    percentile,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
POLICY = HealthPolicy(fail_after=3, recover_after=4, degraded_latency_ms=100.0)


def ok(kind: ProbeKind = ProbeKind.NATS, ms: float = 2.0, **facts: object) -> ProbeResult:
    return ProbeResult(kind, f"{kind.value}-target", True, ms, facts=facts)


def bad(kind: ProbeKind = ProbeKind.NATS, why: str = "connection refused") -> ProbeResult:
    return ProbeResult(kind, f"{kind.value}-target", False, None, why)


HEALTHY_ROUND = [ok(ProbeKind.S3), ok(ProbeKind.NATS), ok(ProbeKind.POSTGRES), ok(ProbeKind.CLUSTER)]
DOWN_ROUND = [ok(ProbeKind.S3), bad(ProbeKind.NATS), bad(ProbeKind.POSTGRES), ok(ProbeKind.CLUSTER)]


def run(tracker: RegionHealthTracker, rounds: list[list[ProbeResult]]) -> list[RegionStatus]:
    return [tracker.observe(r, T0 + timedelta(seconds=i)).status for i, r in enumerate(rounds)]


def test_a_round_is_down_when_a_critical_probe_fails_and_degraded_when_another_does() -> None:
    assert judge_round(HEALTHY_ROUND, POLICY, 2.0).status is RegionStatus.HEALTHY
    down = judge_round(DOWN_ROUND, POLICY, 2.0)
    assert down.status is RegionStatus.DOWN
    assert "nats nats-target: connection refused" in down.reason and "postgres" in down.reason
    s3_only = judge_round([bad(ProbeKind.S3), ok(ProbeKind.NATS)], POLICY, 2.0)
    assert s3_only.status is RegionStatus.DEGRADED and s3_only.reason.startswith("s3 s3-target")
    everything = judge_round([bad(ProbeKind.S3), bad(ProbeKind.CLUSTER)], POLICY, None)
    assert everything.status is RegionStatus.DOWN
    lagging = judge_round([ok(ProbeKind.POSTGRES, lag_seconds=45.0)], POLICY, 2.0)
    assert lagging.status is RegionStatus.DEGRADED and "replication lag 45.0s" in lagging.reason
    slow = judge_round(HEALTHY_ROUND, POLICY, 150.0)
    assert slow.status is RegionStatus.DEGRADED and "moving average" in slow.reason


def test_down_after_exactly_n_failed_rounds_and_back_after_m_good_ones() -> None:
    tracker = RegionHealthTracker("us-west-2", POLICY)
    statuses = run(tracker, [DOWN_ROUND] * 3 + [HEALTHY_ROUND] * 4)
    assert statuses == ["healthy", "healthy", "down", "down", "down", "down", "healthy"]


def test_a_flapping_probe_does_not_flap_the_status() -> None:
    tracker = RegionHealthTracker("us-west-2", POLICY)
    changes = [tracker.observe(r, T0).change for r in [DOWN_ROUND, HEALTHY_ROUND] * 20]
    assert tracker.status is RegionStatus.HEALTHY and changes == [None] * 40
    # Nor out of down: once down, every other round failing keeps it down.
    down = RegionHealthTracker("us-west-2", POLICY, RegionStatus.DOWN)
    assert set(run(down, [HEALTHY_ROUND, DOWN_ROUND] * 20)) == {RegionStatus.DOWN}


@given(st.lists(st.booleans(), max_size=60))
def test_the_status_only_changes_after_enough_rounds_agree(failing: list[bool]) -> None:
    tracker = RegionHealthTracker("r", POLICY)
    history: list[bool] = []
    for i, fails in enumerate(failing):
        history.append(fails)
        change = tracker.observe(DOWN_ROUND if fails else HEALTHY_ROUND, T0).change
        if change is not None and change.status is RegionStatus.DOWN:
            assert history[-3:] == [True] * 3, i
        if change is not None and change.status is RegionStatus.HEALTHY:
            assert history[-4:] == [False] * 4, i


def test_degraded_needs_agreement_too_and_down_does_not_skip_the_reason() -> None:
    tracker = RegionHealthTracker("r", POLICY)
    degraded_round = [bad(ProbeKind.S3, "403 Forbidden"), ok(ProbeKind.NATS)]
    assessments = [tracker.observe(r, T0) for r in [degraded_round] * 3]
    change = assessments[-1].change
    assert [a.status for a in assessments] == ["healthy", "healthy", "degraded"]
    assert change is not None and change.previous is RegionStatus.HEALTHY
    assert "3 consecutive rounds degraded or worse" in change.reason and "403 Forbidden" in change.reason


def test_latency_moving_average_and_percentiles() -> None:
    window = LatencyWindow(5)
    for ms in [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, None]:
        window.add(ms)
    stats = window.stats()
    assert stats.samples == 5 and stats.average_ms == 40.0  # 10 fell out of the window
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms) == (40.0, 60.0, 60.0)
    assert percentile([], 50) is None and percentile([7.0], 99) == 7.0
    tracker = RegionHealthTracker("r", HealthPolicy(fail_after=1, recover_after=1, degraded_latency_ms=100.0))
    slow = [ok(ms=300.0)]
    assert tracker.observe(slow, T0).status is RegionStatus.DEGRADED
    assert tracker.observe([ok(ms=1.0)], T0).latency.average_ms == 150.5


def head(data: tuple[str, ...] = (), preferred: str | None = None) -> QueueHead:
    return QueueHead("ws", "t", "normal", T0, preferred_cluster=preferred, data_locations=data)


def test_admission_prefers_the_lowest_latency_healthy_region_after_data_locality() -> None:
    clusters = [
        ClusterView("west", "us-west-2", 4, 0),
        ClusterView("east", "us-east-1", 4, 0),
        ClusterView("eu", "eu-west-1", 4, 0, data_locations=("lab-eu",)),
    ]
    latency = {"us-west-2": 80.0, "us-east-1": 20.0, "eu-west-1": 160.0}
    assert score_clusters(head(), clusters, {}, latency)[0].cluster == "east"
    # Data locality outweighs latency: the data's region wins while it is healthy...
    assert score_clusters(head(("lab-eu",)), clusters, {}, latency)[0].cluster == "eu"
    # ...and is skipped when it is down; the fastest healthy region takes it.
    scores = score_clusters(head(("lab-eu",)), clusters, {"eu-west-1": "down"}, latency)
    assert [s.cluster for s in scores if s.eligible] == ["east", "west"]
    # Latencies under the floor (loopback) count as equal: price and capacity decide.
    assert (
        score_clusters(head(), clusters, {}, {"us-west-2": 0.4, "us-east-1": 0.9})[0].parts["latency"] == 1.0
    )


def test_a_workset_bound_for_a_down_region_is_rerouted_with_the_reason() -> None:
    clusters = [ClusterView("west", "us-west-2", 4, 0), ClusterView("east", "us-east-1", 4, 0)]
    placed = choose_admission(
        [head(preferred="west")], clusters, Occupancy(0, {}), Limits(9, {}, 9), {}, {"us-west-2": "down"}
    )
    assert placed is not None and placed.cluster == "east"
    assert "re-routed: preferred cluster west is not eligible (region us-west-2 is down)" in placed.reason
