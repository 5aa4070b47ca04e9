"""Admission order, limits and affinity as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stamen.domain.admission import (
    ClusterView,
    Limits,
    Occupancy,
    QueueHead,
    TenantQueue,
    choose_admission,
    next_head,
    next_queues,
    score_clusters,
)

T0 = datetime(2026, 11, 29, tzinfo=UTC)


def head(ws: str, tenant: str, priority: str = "normal", minutes: int = 0, **kw: object) -> QueueHead:
    return QueueHead(ws, tenant, priority, T0 + timedelta(minutes=minutes), **kw)  # type: ignore[arg-type]


CLUSTERS = [ClusterView("a", "us-west-2", 2, 0), ClusterView("b", "us-east-1", 2, 0)]
LIMITS = Limits(global_max=3, tenant_max={}, default_tenant_max=1)


def test_priority_beats_fair_share_and_age() -> None:
    heads = [head("old-normal", "t1", minutes=0), head("new-urgent", "t2", "urgent", minutes=50)]
    assert choose_admission(heads, CLUSTERS, Occupancy(0, {}), LIMITS, {}).workset_id == "new-urgent"  # type: ignore[union-attr]


def test_fair_share_prefers_tenant_with_fewer_running_then_least_recently_admitted() -> None:
    limits = Limits(global_max=10, tenant_max={}, default_tenant_max=5)
    heads = [head("hog-1", "hog", minutes=0), head("small-1", "small", minutes=30)]
    busy = Occupancy(2, {"hog": 2})
    assert choose_admission(heads, CLUSTERS, busy, limits, {}).workset_id == "small-1"  # type: ignore[union-attr]
    # Equal running: the tenant admitted longer ago goes first.
    last = {"hog": T0 + timedelta(hours=1), "small": T0}
    assert choose_admission(heads, CLUSTERS, Occupancy(0, {}), limits, last).workset_id == "small-1"  # type: ignore[union-attr]


def test_limits_global_tenant_and_cluster() -> None:
    heads = [head("w1", "t1"), head("w2", "t2")]
    assert choose_admission(heads, CLUSTERS, Occupancy(3, {"x": 3}), LIMITS, {}) is None  # global full
    placed = choose_admission(heads, CLUSTERS, Occupancy(1, {"t1": 1}), LIMITS, {})
    assert placed is not None and placed.tenant_id == "t2"  # t1 at its quota
    full = [ClusterView("a", "us-west-2", 2, 2), ClusterView("b", "us-east-1", 1, 1)]
    assert choose_admission(heads, full, Occupancy(0, {}), Limits(9, {}, 9), {}) is None  # every cluster full


def test_affinity_prefers_data_locality_and_explains_itself() -> None:
    clusters = [
        ClusterView("west", "us-west-2", 4, 0, data_locations=("lab-bucket",)),
        ClusterView("east", "us-east-1", 4, 0),
    ]
    placed = choose_admission(
        [head("w", "t", data_locations=("lab-bucket",))], clusters, Occupancy(0, {}), LIMITS, {}
    )
    assert placed is not None and placed.cluster == "west"
    assert "locality=1.00" in placed.reason and set(placed.scores) == {"west", "east"}


def test_draining_down_and_unhealthy_clusters_are_not_chosen() -> None:
    clusters = [
        ClusterView("drain", "us-west-2", 4, 0, status="draining"),
        ClusterView("sick", "eu-west-1", 4, 0),
        ClusterView("ok", "us-east-1", 4, 0, price_factor=3.0),
    ]
    scores = score_clusters(head("w", "t"), clusters, {"eu-west-1": "down"})
    assert [s.cluster for s in scores if s.eligible] == ["ok"]
    assert {s.cluster: s.why_not for s in scores if not s.eligible} == {
        "drain": "cluster is draining",
        "sick": "region eu-west-1 is down",
    }


def test_a_down_region_still_takes_work_when_no_other_region_can() -> None:
    """A one-region stack through a NATS or PostgreSQL outage: avoiding its only region stalls everything."""
    only = [ClusterView("west", "us-west-2", 4, 0), ClusterView("west-2", "us-west-2", 4, 0)]
    scores = score_clusters(head("w", "t"), only, {"us-west-2": "down"})
    assert all(s.eligible for s in scores)
    # A draining cluster elsewhere takes no work, so it is not somewhere else to go either.
    with_draining = [*only, ClusterView("east", "us-east-1", 4, 0, status="draining")]
    assert [s.cluster for s in score_clusters(head("w", "t"), with_draining, {"us-west-2": "down"}) if s.eligible] == [
        "west", "west-2",
    ]  # fmt: skip
    # Once another region is up, the down one is avoided.
    with_east = [*only, ClusterView("east", "us-east-1", 4, 0)]
    assert [
        s.cluster for s in score_clusters(head("w", "t"), with_east, {"us-west-2": "down"}) if s.eligible
    ] == ["east"]


def test_a_degraded_region_ranks_below_a_healthy_one_and_an_unknown_region_counts_as_healthy() -> None:
    clusters = [ClusterView("a", "us-west-2", 4, 0), ClusterView("b", "us-east-1", 4, 0)]
    assert [s.cluster for s in score_clusters(head("w", "t"), clusters, {})] == [
        "a",
        "b",
    ]  # name breaks the tie
    degraded = score_clusters(head("w", "t"), clusters, {"us-west-2": "degraded"})
    assert [s.cluster for s in degraded] == ["b", "a"] and all(s.eligible for s in degraded)
    assert {s.cluster: s.parts["health"] for s in degraded} == {"a": 0.3, "b": 1.0}


def test_preferred_cluster_wins_when_eligible() -> None:
    placed = choose_admission([head("w", "t", preferred_cluster="b")], CLUSTERS, Occupancy(0, {}), LIMITS, {})
    assert placed is not None and placed.cluster == "b"


@given(
    st.lists(
        st.tuples(st.sampled_from(["t1", "t2", "t3"]), st.sampled_from(["urgent", "normal", "low"])),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 4),
)
def test_never_admits_beyond_a_limit(queue: list[tuple[str, str]], running_t1: int) -> None:
    heads = [head(f"w{i}", t, p, minutes=i) for i, (t, p) in enumerate(queue)]
    limits = Limits(global_max=4, tenant_max={"t1": 2}, default_tenant_max=1)
    occ = Occupancy(running_t1, {"t1": running_t1})
    placed = choose_admission(heads, CLUSTERS, occ, limits, {})
    if placed is not None:
        assert occ.total < limits.global_max
        assert occ.by_tenant.get(placed.tenant_id, 0) < limits.for_tenant(placed.tenant_id)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3", "t4"]),
            st.sampled_from(["urgent", "normal", "low"]),
            st.integers(0, 3),  # minutes: ties on age, then the id decides
        ),
        min_size=1,
        max_size=16,
    ),
    st.dictionaries(st.sampled_from(["t1", "t2", "t3", "t4"]), st.integers(0, 3)),
    st.dictionaries(st.sampled_from(["t1", "t2", "t3", "t4"]), st.integers(0, 2)),
    st.integers(0, 12),
)
def test_the_front_queues_heads_give_the_head_every_queues_heads_give(
    queued: list[tuple[str, str, int]], running: dict[str, int], last_hours: dict[str, int], global_max: int
) -> None:
    """Admission reads the heads of the queues in front only (`next_queues`): what it takes from them is
    what it would take from every queue's head, ties on running and last admission included."""
    heads: dict[tuple[str, str], QueueHead] = {}
    for i, (tenant, priority, minutes) in enumerate(queued):  # the first of each queue is its head
        heads.setdefault((tenant, priority), head(f"w{i}", tenant, priority, minutes=minutes))
    last = {t: T0 + timedelta(hours=h) for t, h in last_hours.items()}
    occupancy = Occupancy(sum(running.values()), running)
    limits = Limits(global_max=global_max, tenant_max={"t1": 1, "t2": 3}, default_tenant_max=2)
    front = next_queues([TenantQueue(t, p) for t, p in heads], occupancy, limits, last)
    from_front = next_head([heads[(q.tenant_id, q.priority)] for q in front], occupancy, limits, last)
    assert from_front == next_head(list(heads.values()), occupancy, limits, last)
    assert (from_front is None) == (front == [])
