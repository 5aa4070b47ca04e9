"""Every benchmark in bench/ runs, small, and prints its figures as JSON: so they cannot rot.

Smoke runs only: no figure is compared with a target here (timings belong in bench/README.md), only
checked for being a measurement at all (the work was done, counts add up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import REPO_ROOT

BENCH = REPO_ROOT / "bench"


def run_bench(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args, "--json"],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env={**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    figures: dict[str, Any] = json.loads(result.stdout)
    assert figures["bench"] == name and figures["machine"]["cpus"] >= 1
    return figures


def test_ceiling(postgres_admin_url: str, nats_url: str) -> None:
    f = run_bench(
        "ceiling", "--seconds", "0.3", env={"DATABASE_URL": postgres_admin_url, "NATS_URL": nats_url}
    )
    assert f["postgres"]["transactions"] > 0 and f["postgres"]["tx_per_second"] > 0
    assert f["jetstream"]["messages"] > 0 and f["jetstream"]["publish_ack_per_second"] > 0


def test_admission(postgres_admin_url: str) -> None:
    f = run_bench(
        "admission", "--queued", "300", "--history", "200", "--clusters", "3", "--tenants", "20",
        "--decisions", "5", env={"DATABASE_URL": postgres_admin_url},
    )  # fmt: skip
    assert f["decision_admitting"]["n"] == f["decision_blocked"]["n"] == 5
    assert (
        0 < f["queue_read"]["queues"] <= 20 * 3 and 0 < f["queue_read"]["front"] <= f["queue_read"]["queues"]
    )
    assert f["queue_read"]["plan_nodes"], "the plans of the queue reads were read"


def test_scheduler(postgres_admin_url: str) -> None:
    f = run_bench("scheduler", "--worksets", "6", "--slots", "3", env={"DATABASE_URL": postgres_admin_url})
    assert f["states"] == {"completed": 6} and f["completed"] == 6
    assert f["statements_per_workset"] > f["begin_commit_per_workset"] > 0
    assert (
        f["cpu_ms_per_workset"]["scheduler_process"] > 0
        and f["cpu_ms_per_workset"]["local_executor_processes"] > 0
    )


def test_api(postgres_admin_url: str, nats_url: str) -> None:
    f = run_bench(
        "api", "--worksets", "300", "--requests", "4", "--concurrency", "2",
        env={"DATABASE_URL": postgres_admin_url, "NATS_URL": nats_url},
    )  # fmt: skip
    for mode in ("idle", "under_load"):
        assert {k: v["n"] for k, v in f[mode].items()} == dict.fromkeys(
            ("list", "list_tenant", "list_running", "detail"), 4
        )
    assert f["cpu_ms_per_request"]["idle"]["portal"] > 0


def test_outbox_relay() -> None:
    """Commit, relay (in passes of 7) and consume 50 events on their own servers."""
    f = run_bench("outbox_relay", "--events", "50")
    assert f["events"] == 50 and f["commit_events_per_second"] > 0
    for phase in ("relay", "consume"):
        assert f[phase]["events_per_second"] > 0 and f[phase]["own_cpu_us_per_event"] > 0
        assert f[phase]["round_trips_per_event"] > 0
    # A relay pass is three round trips (BEGIN, the claim that deletes the rows, COMMIT) for up to 7 events.
    assert 3 / 7 <= f["relay"]["round_trips_per_event"] < 1


def test_local_executor() -> None:
    f = run_bench("local_executor", "--steps", "6", "--in-flight", "3")
    assert f["exit_to_noticed"]["n"] == 6 and f["overhead_cpu_ms_per_step"] > 0
    assert f["exit_notifications"] is True
    assert f["runner_page_faults_per_step"] > 0 and f["fork_server_rss_mb"] > 0


@pytest.mark.slow
def test_lifecycle() -> None:
    """The whole embedded stack: 4 worksets, one of them failing once and retried."""
    f = run_bench("lifecycle", "--worksets", "4", "--flaky", "0.25", "--ceiling-seconds", "0.2", timeout=300)
    assert f["all_completed"] and f["states_at_end"] == {"completed": 4}
    assert "submitted -> completed (flaky)" in f["latencies"] and "running -> failed" in f["latencies"]
    assert f["transactions_per_workset"] > 0 and f["events_per_workset"] > 0
    assert f["processes"]["scheduler"]["cpu_seconds"] > 0 and f["processes"]["postgres"]["cpu_seconds"] > 0
    assert "moto" not in f["processes"]
    # NATS delivered the worksets' events: its threads were woken for them.
    assert f["processes"]["nats"]["wakeups"] > 0 and f["wakeups_per_workset"] > 0
    assert f["postgres_cpu_ms_per_workset_by_process"]["client backends"] > 0
    # (Per table counts are not checked: an idle backend's reach pg_stat up to 10 s after its commit.)
    assert f["writes_per_workset"]["(server)"]["wal_bytes"] > 0
    o = f["slot_occupancy"]
    assert 0 < o["mean_held"] <= 4
    assert 0 <= o["slot_free_while_queued_share"] <= 1 and 0 < o["slot_free_queue_empty_share"] <= 1


def test_slot_occupancy_tells_admission_lag_from_an_empty_queue() -> None:
    """Two slots, 10 s: A holds one 2-7; B waits queued 1-4 while a slot is free, holds one 4-8."""
    sys.path.insert(0, str(BENCH))
    try:
        from lifecycle import slot_occupancy  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    rows = [
        {"from_state": None, "to_state": "submitted", "at": at(0)},
        {"from_state": "submitted", "to_state": "queued", "at": at(1)},  # B
        {"from_state": "submitted", "to_state": "queued", "at": at(1.5)},  # A
        {"from_state": "queued", "to_state": "scheduled", "at": at(2)},  # A
        {"from_state": "scheduled", "to_state": "running", "at": at(3)},  # A
        {"from_state": "queued", "to_state": "scheduled", "at": at(4)},  # B
        {"from_state": "running", "to_state": "completed", "at": at(7)},  # A
        {"from_state": "scheduled", "to_state": "completed", "at": at(8)},  # B
        {"from_state": "completed", "to_state": "archived", "at": at(10)},
    ]
    o = slot_occupancy(sorted(rows, key=lambda r: r["at"]), slots=2)
    assert o["mean_held"] == round((5 + 4) / 10, 2)
    # Free slots with B queued: 1-4 (3 s of 10); free with nothing queued: 0-1 and 7-10 (4 s).
    assert o == {**o, "slot_free_while_queued_share": 0.3, "slot_free_queue_empty_share": 0.4}


@pytest.mark.slow
def test_lifecycle_statement_cpu() -> None:
    """--statement-cpu: PostgreSQL's CPU by statement shape and protocol message, parsed from its log."""
    f = run_bench(
        "lifecycle",
        "--worksets",
        "2",
        "--flaky",
        "0",
        "--ceiling-seconds",
        "0.2",
        "--statement-cpu",
        timeout=300,
    )
    assert f["all_completed"] and "breakdown" not in f
    s = f["statement_cpu"]
    assert 0 < s["logged_ms_per_workset"] and s["postgres_ms_per_workset"] > 0
    assert s["by_phase_ms_per_workset"]["execute"] > 0 and s["by_phase_ms_per_workset"]["simple"] > 0
    shapes = {t["statement"]: t for t in s["top"]}
    save = next(t for name, t in shapes.items() if name.startswith("WITH updated AS ( UPDATE worksets"))
    assert save["calls_per_workset"] >= 1 and save["execute"] > 0
    assert shapes["COMMIT;"]["simple"] > 0 and shapes["COMMIT;"]["execute"] == 0


@pytest.mark.slow
def test_intake() -> None:
    """The embedded stack idle for a second, then 5 submissions offered in a second."""
    f = run_bench("intake", "--idle-seconds", "1", "--rate", "5", "--seconds", "1", timeout=300)
    assert f["all_past_intake"] and f["offered"]["sent"] == 5 and not f["offered"]["refused"]
    assert f["submitted_to_queued"]["n"] == 5 and f["seen_validating"] == 5
    assert {"scheduler", "validator", "postgres", "nats"} <= set(f["idle"]["percent_of_one_core"])
    assert "moto" not in f["idle"]["percent_of_one_core"]
    assert set(f["idle"]["wakeups_per_second"]) == set(f["idle"]["percent_of_one_core"])
    assert {leg["n"] for leg in f["legs"].values()} == {5}
    assert f["emulator_ranged_get"]["one_at_a_time"]["n"] == 100
    busy = f["cpu_during_intake"]["ms_per_workset"]
    assert busy["portal"] > 0 and busy["validator"] + busy["validator-2"] > 0 and "moto" not in busy


def test_validation(postgres_admin_url: str) -> None:
    """The validator's handler alone: 10 validations at 20/s, all queued."""
    f = run_bench("validation", "--worksets", "10", "--rate", "20", env={"DATABASE_URL": postgres_admin_url})
    assert f["all_queued"] and f["handler"]["n"] == 10 and f["cpu_ms_per_validation"] > 0


def test_bench_readme_names_every_bench() -> None:
    readme = (BENCH / "README.md").read_text()
    for script in sorted(Path(BENCH).glob("*.py")):
        if script.name != "measure.py":
            assert f"bench/{script.name}" in readme, f"bench/README.md does not say how to run {script.name}"


def test_portal(postgres_admin_url: str, nats_url: str) -> None:
    f = run_bench(
        "portal", "--worksets", "300", "--requests", "3",
        env={"DATABASE_URL": postgres_admin_url, "NATS_URL": nats_url},
    )  # fmt: skip
    assert f["worksets"] == 300 and {k: v["n"] for k, v in f["pages"].items()} == {
        "dashboard": 3,
        "dashboard, charts cold": 3,
        "worksets, page 1": 3,
        "worksets, page 6": 3,
        "worksets, search": 3,
        "workset detail": 3,
    }
    assert f["pages"]["dashboard"]["cpu_ms_per_request"] > 0


def test_event_loop(postgres_admin_url: str, nats_url: str) -> None:
    f = run_bench(
        "event_loop", "--round-trips", "200", "--rounds", "1",
        env={"DATABASE_URL": postgres_admin_url, "NATS_URL": nats_url},
    )  # fmt: skip
    for loop in ("asyncio", "uvloop"):
        for kind in ("postgres", "jetstream"):
            assert f["medians"][loop][kind]["client_us"] > 0 and f["medians"][loop][kind]["wall_us"] > 0
