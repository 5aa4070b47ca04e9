"""A region lost mid-run, on real replicated engines started by the test (tests/regions/loopback.py):
three NATS nodes, a PostgreSQL primary and standby, moto, and the scheduler and regions services.

Worksets flow; the primary region's NATS node and PostgreSQL are killed with SIGKILL. The region is
reported down within the configured threshold, the standby is promoted, work continues in the other
regions and every workset ends completed: none lost, none run twice (one completion each, attempts never
overlap, exported steps never recomputed, one workset.completed event each). Jobs still running in the
lost region are marked lost and resumed elsewhere after their exported step. The old primary comes back
as a standby that refuses writes, synchronous again, and its region healthy. The figures (detection,
promotion, RTO) are printed. STAMEN_FAILOVER_WORKSETS sets N (default 30); the 500-workset run is
bench/region_failover.py, with its figures in docs/multi-region.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.regions.loopback import Loopback, run_failover

pytestmark = pytest.mark.slow
N = int(os.environ.get("STAMEN_FAILOVER_WORKSETS", "30"))


async def test_the_primary_region_is_lost_mid_run_and_nothing_is_lost(tmp_path: Path) -> None:
    lab = Loopback(tmp_path)
    report: dict[str, Any] = {}
    try:
        await run_failover(lab, N, report)
    except BaseException:
        print(lab.logs(lines=60))
        raise
    finally:
        print("failover figures:", report)
        lab.stop()
    threshold = lab.fail_after * (lab.probe_interval + lab.probe_timeout) + lab.probe_interval
    print(
        f"\nRTO {report['rto_seconds']}s (kill -> first workset transition on the new primary); region down after "
        f"{report['detected_seconds']}s (threshold {threshold:g}s), standby promoted after {report['promoted_seconds']}s"
    )
    # The configured threshold is in probe rounds, and the region went down after exactly that many...
    assert report["down_reason"].startswith(f"{lab.fail_after} consecutive rounds down"), report
    # ...each at most an interval plus a probe timeout; on a machine shared by many (these are), the
    # process itself may wait for a CPU: up to as long again.
    assert 0 < report["detected_seconds"] <= 2 * threshold, report
    # Promoted after the region went down, and not left hanging. How soon is a speed figure, which
    # bench/region_failover.py prints: 3 s here beside a busy suite, 9 s once (a full run, 2026-12-06), so
    # a bound of 5 s made this test fail on the machine's load, not on the failover.
    assert report["detected_seconds"] <= report["promoted_seconds"] <= report["detected_seconds"] + 30.0, (
        report
    )
