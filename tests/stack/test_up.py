"""`stamen up` from nothing, a kill -9 of one service, Ctrl-C, and a restart with state intact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

pytestmark = pytest.mark.slow


def stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "DATABASE_URL", "AWS_ENDPOINT_URL"}}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_stack(state_dir: Path, log: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stamen", "up", "--state-dir", str(state_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
        env=stack_env(),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        record = json.loads(line)
        if "error" in record:
            raise AssertionError(f"stamen up failed: {record}")
        if "portal_url" in record:
            return proc, record
        assert time.monotonic() < deadline, "stamen up took too long"
    raise AssertionError(f"stamen up exited early ({proc.wait()}); see {log}:\n{log.read_text()[-3000:]}")


def stamen(state_dir: Path, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "stamen", *args, "--state-dir", str(state_dir), "--json"],
        capture_output=True,
        text=True,
        env=stack_env(),
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def stack_file(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "stack.json").read_text())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_stack(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0


def assert_nats_requires_credentials(service_url: str) -> None:
    """The embedded NATS runs with authorization: the services' URL carries a password, and a client
    without it (or with a wrong one) is refused."""
    parts = urllib.parse.urlsplit(service_url)
    assert parts.username == "stamen" and parts.password
    bare = f"nats://{parts.hostname}:{parts.port}"
    wrong = f"nats://stamen:wrong@{parts.hostname}:{parts.port}"

    async def attempt(url: str) -> str:
        nc = NATS()
        try:
            await nc.connect(url, allow_reconnect=False, connect_timeout=3)
        except Exception as exc:
            return f"refused: {exc!r}"
        await nc.close()
        return "connected"

    assert asyncio.run(attempt(service_url)) == "connected"
    for url in (bare, wrong):
        outcome = asyncio.run(attempt(url))
        assert outcome.startswith("refused") and "uthorization" in outcome, outcome


def assert_postgres_requires_the_password(url: str) -> None:
    import asyncpg

    parts = urllib.parse.urlsplit(url)
    assert parts.password
    bare = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))

    async def attempt() -> str:
        try:
            await (await asyncpg.connect(bare, timeout=10)).close()
        except asyncpg.InvalidPasswordError as exc:
            return f"refused: {exc}"
        return "connected"

    assert asyncio.run(attempt()).startswith("refused")


def test_stamen_up_supervises_and_keeps_state_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    log = tmp_path / "launcher.log"
    proc, status = start_stack(state, log)
    try:
        assert set(status["services"]) == {
            "validator",
            "validator-2",  # two validator replicas by default (STAMEN_VALIDATOR_REPLICAS)
            "scheduler",
            "scheduler-2",  # two scheduler replicas by default (STAMEN_SCHEDULER_REPLICAS)
            "diagnostics",
            "notifier",
            "regions",
            "portal",
        }
        assert all(s["status"] == "ready" for s in status["services"].values()), {
            k: s["status"] for k, s in status["services"].items()
        }
        assert set(status["embedded"]) == {"nats", "postgres", "moto"}
        assert status["demo"]["state"] == "completed", status["demo"]
        first_demo = status["demo"]["id"]
        assert http_ok(status["portal_url"])
        ports = [s["port"] for s in stack_file(state)["services"].values()]
        assert len(set(ports)) == len(ports)  # each service's port is its own
        assert_nats_requires_credentials(stack_file(state)["nats_url"])
        for secret in (
            state / "stack.json",
            state / "nats" / "service.password",
            state / "nats" / "auth.conf",
            state / "secrets" / "postgres.password",
            state / "secrets" / "api_key_pepper",
        ):
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        # The embedded PostgreSQL wants its generated password (scram-sha-256), not local trust.
        db = stack_file(state)["database_url"]
        assert (state / "secrets" / "postgres.password").read_text().strip() in db
        assert_postgres_requires_the_password(db)
        assert "***" in stamen(state, "status")["nats_url"]

        # kill -9 one service: the supervisor starts a new one, which consumes again.
        before = stack_file(state)["services"]["validator"]
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: stack_file(state)["services"]["validator"]["pid"] != before["pid"], 30, "restart")
        after = stack_file(state)["services"]["validator"]
        assert after["restarts"] == 1
        wait_until(lambda: http_ok(f"{after['url']}/readyz"), 30, "validator ready again")
        spec = tmp_path / "ws.yaml"
        spec.write_text(Path(__file__).parents[2].joinpath("libs/stamen/demo/demo_workset.yaml").read_text())
        stamen(state, "bucket", "grant", "acme", "stamen-demo", "--read-write")  # the demo's data is there
        submitted = stamen(state, "submit", str(spec), "--tenant", "acme")
        wait_until(
            lambda: stamen(state, "worksets", "show", submitted["workset_id"])["state"] == "completed",
            30,
            "validation",
        )
        shown = stamen(state, "worksets", "show", submitted["workset_id"])
        # The estimate from validation and what the run really used, side by side.
        assert shown["estimate"]["vcpu_hours"] > 0 and shown["estimate"]["cost_usd_median"] >= 0
        assert shown["actual"]["step_runs"] == 4 and shown["actual"]["cpu_seconds"] > 0
        pids = [s["pid"] for s in stack_file(state)["services"].values()]
        pids += [s["pid"] for s in stack_file(state)["servers"].values()]
    finally:
        stop_stack(proc)
    # Ctrl-C stopped everything it started.
    wait_until(lambda: not any(alive(p) for p in pids), 10, "all processes gone")

    proc, status = start_stack(state, log)
    try:
        listed = {w["id"]: w for w in stamen(state, "worksets", "ls")}
        assert listed[first_demo]["state"] == "completed"  # state kept across the full restart
        assert listed[submitted["workset_id"]]["state"] == "completed"
        assert status["demo"]["state"] == "completed" and status["demo"]["id"] != first_demo
        # The launcher itself dies (kill -9): its servers and services live on; the next `stamen up`
        # stops those orphans and starts cleanly on the same data.
        orphans = [s["pid"] for s in stack_file(state)["services"].values()]
        orphans += [s["pid"] for s in stack_file(state)["servers"].values()]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc, status = start_stack(state, log)
        assert not any(alive(p) for p in orphans)
        assert status["demo"]["state"] == "completed"
        history = stamen(state, "worksets", "show", first_demo)["history"]
        assert [h["to_state"] for h in history] == [
            "submitted",
            "validating",
            "queued",
            "scheduled",
            "running",
            "completed",
        ]
    finally:
        stop_stack(proc)
