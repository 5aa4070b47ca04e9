"""A region lost mid-run at scale: the scenario of tests/regions/test_failover.py with more worksets.

    python bench/region_failover.py [--worksets 500] [--concurrency 12]

Three regions on loopback from the pip packages' binaries (three NATS nodes, a PostgreSQL primary and
synchronous standby, moto, one local cluster per region), the scheduler and regions services as real
processes. Once a quarter of the worksets have completed, the primary region's NATS node and PostgreSQL
are killed (SIGKILL). Every check of the test holds here too (none lost, none run twice, the old primary
back as a standby); the figures printed are how long detection, promotion and recovery took, what moved,
and what watching the regions cost (the regions service's CPU per probe round).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from measure import REPO_ROOT, bench_process, emit, machine

sys.path.insert(0, str(REPO_ROOT))  # the harness lives with the test that uses it

from tests.regions.loopback import Loopback, run_failover


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stamen-region-failover-") as folder:
        lab = Loopback(Path(folder), concurrency=args.concurrency, lost_after=args.lost_after)
        try:
            await run_failover(lab, args.worksets, report)
        finally:
            lab.stop()
        threshold = lab.fail_after * (lab.probe_interval + lab.probe_timeout) + lab.probe_interval
        settings = {
            "probe_interval_seconds": lab.probe_interval, "probe_timeout_seconds": lab.probe_timeout,
            "fail_after": lab.fail_after, "recover_after": lab.recover_after,
            "lost_after_seconds": lab.lost_after, "concurrency": lab.concurrency,
            "detection_threshold_seconds": threshold, "replication": "synchronous",
        }  # fmt: skip
    return {"bench": "region_failover", "machine": machine(), "settings": settings, **report}


def lines_for(f: dict[str, Any]) -> list[str]:
    s = f["settings"]
    return [
        f"{f['worksets']} worksets, {s['concurrency']} at once over 3 regions; the primary region killed after "
        f"{f['killed_after_seconds']} s ({f['completed_before_kill']} completed)",
        f"region reported down after {f['detected_seconds']} s (threshold {s['detection_threshold_seconds']:g} s: "
        f"{s['fail_after']} rounds of {s['probe_interval_seconds']:g} s + {s['probe_timeout_seconds']:g} s timeout)",
        f"standby promoted after      {f['promoted_seconds']} s",
        f"RTO (first workset transition on the new primary): {f['rto_seconds']} s",
        f"all completed after {f['run_seconds']} s; moved out of the lost region: {f['moved_out']}; "
        f"resumed after an exported step: {f['resumed_after_exported_step']}; `work` steps run: "
        f"{f['work_step_runs']} for {f['worksets']} worksets",
        f"old primary rejoined as a standby in {f['rejoin_seconds']} s; events stream peers {f['events_stream_peers']}",
        f"regions service CPU per probe round: {f['regions_service_cpu_ms_per_round']} ms "
        f"(load average {f['machine']['load_average_1m']})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worksets", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=12, help="worksets at once (a third per region)")
    parser.add_argument("--lost-after", type=float, default=2.0, help="STAMEN_REGION_LOST_AFTER_SECONDS")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)


if __name__ == "__main__":
    main()
