"""Claim check: no event grows with its workset. The documents (spec, findings, estimate, log tails, reports)
stay in PostgreSQL; every event stays under EVENT_MAX_BYTES, far below NATS's max payload (1 MiB default).
The same bound is measured on a real 10,000-sample workset in tests/e2e/test_large_workset.py."""

from __future__ import annotations

from typing import Any

from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.events.types import (
    EVENT_MAX_BYTES,
    SHORT_TEXT,
    WorksetCancelled,
    WorksetFailed,
    WorksetRejected,
    WorksetScheduled,
    WorksetValidated,
)

SAMPLES = 10_000


def big_spec() -> dict[str, Any]:
    return {
        "name": "huge",
        "samples": [
            {
                "id": f"S{i}",
                "platform": "ILMN",
                "r1": f"s3://lab/reads/S{i}_R1.fastq.gz",
                "r2": f"s3://lab/reads/S{i}_R2.fastq.gz",
            }
            for i in range(SAMPLES)
        ],
    }


def test_events_of_a_10000_sample_workset_stay_small() -> None:
    ws = Workset.submit(
        tenant_id="acme", name="huge", region="us-west-2", spec=big_spec(), source="api", actor="test"
    )
    ws.transition(WorksetState.VALIDATING, actor="validator")
    ws.transition(
        WorksetState.REJECTED,
        actor="validator",
        event=WorksetRejected(
            error_count=SAMPLES, warning_count=SAMPLES, codes=["SNF-OBJ-001", "VAL-PAIR-004"]
        ),
    )
    sizes = {e.type: len(e.to_json()) for e in ws.pending_events}
    assert set(sizes) == {"workset.submitted", "workset.rejected"}
    assert max(sizes.values()) < EVENT_MAX_BYTES, sizes
    print(f"\nlargest event of a {SAMPLES}-sample workset: {max(sizes.values())} bytes {sizes}")


def test_free_text_is_clipped_so_no_event_can_grow_without_bound() -> None:
    long = "x" * 100_000
    ws = Workset.submit(tenant_id="acme", name=long, region="us-west-2", spec={}, source="api", actor="t")
    for payload in (
        WorksetFailed(reason=long, step="align", native_state="OUT_OF_MEMORY"),
        WorksetScheduled(cluster="local", reason=long, scores={f"cluster-{i}": 0.5 for i in range(50)}),
        WorksetCancelled(cancelled_by="operator:alice", reason=long),
        WorksetValidated(warning_count=10**9, cost_usd_median=1e12),
    ):
        ws.event(payload)
    for event in ws.pending_events:
        assert len(event.to_json()) < EVENT_MAX_BYTES, event.type
    assert len(ws.pending_events[0].payload.model_dump()["name"]) == SHORT_TEXT
