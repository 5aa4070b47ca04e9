"""Regions as the CLI and the portal API show them (one shape for both)."""

from __future__ import annotations

from typing import Any

from stamen.store.regions import RegionOverview


def overview_json(o: RegionOverview) -> dict[str, Any]:
    """One region as the CLI and the portal API show it."""
    h = o.health
    return {
        "region": o.region,
        "registered": o.registered,
        "primary": o.is_primary,
        "status": o.status.value,
        "health_reported": h is not None,
        "reason": h.reason if h else "nothing has reported on this region: it counts as healthy",
        "since": h.changed_at if h else None,
        "forced_by": h.forced_by if h else None,
        "forced_reason": h.forced_reason if h else None,
        "latency_ms": {
            "average": h.latency_ms if h else None,
            "p50": h.latency_p50_ms if h else None,
            "p95": h.latency_p95_ms if h else None,
            "p99": h.latency_p99_ms if h else None,
        },
        "last_round": {"verdict": h.verdict, "reason": h.verdict_reason, "at": h.probed_at} if h else None,
        "probes": h.probes if h else [],
        "clusters": list(o.clusters),
        "endpoints": {
            "s3": o.record.s3_endpoint,
            "control_bucket": o.record.control_bucket,
            "nats": list(o.record.nats_servers),
            "postgres": o.record.postgres_endpoint,
        }
        if o.record
        else None,
    }
