"""The soak, short: the embedded stack heals by itself while two services are SIGKILLed, NATS and
PostgreSQL are each held down for a few seconds, and duplicate and malformed messages are injected.

The long run and its fault-free control are in bench/README.md; this one keeps the verdict honest on
every CI run (it fails on any lost or doubled event, step run twice, overlap, slot over the limit,
unparked malformed message, or service that does not come back)."""

from __future__ import annotations

import pytest

from tests.bench.test_benches import run_bench

pytestmark = pytest.mark.slow


def test_short_soak_heals_without_an_operator() -> None:
    f = run_bench(
        "soak", "--worksets", "8", "--rate", "1", "--slots", "4", "--kills", "2", "--nats-outage", "3",
        "--pg-outage", "5", "--fault-gap", "8", "--duplicates", "2", "--malformed", "4", "--timeout", "240",
        timeout=420,
    )  # fmt: skip
    assert f["ok"], f["verdict"]
    assert f["states"] == {"completed": 8}
    assert f["steps"]["runs"] == 8 * 3 and f["steps"]["steps_twice"] == f["steps"]["overlaps"] == 0
    assert 0 < f["steps"]["peak_concurrent"] <= 4
    assert f["events"]["lost"] == f["events"]["doubled"] == f["events"]["unpublished"] == 0
    assert f["events"]["injected_copies"] >= 2 + 4  # the duplicates and malformed really went onto the stream
    assert f["malformed"] == {"injected": 4, "parked": 4}
    assert sorted(f["recovery_seconds"]) == ["kill", "nats", "postgres"]
    assert len(f["recovery_seconds"]["kill"]) == 2
