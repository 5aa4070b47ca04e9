"""Each service as its own process: health, readiness, metrics, JSON logs, and a clean stop on SIGTERM.

Both ways a service is started are covered: `python -m services.<name>` and the console entry
`stamen service <name>` (what the supervisor and containers run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from stamen.stack.ports import free_port
from stamen.stack.supervisor import SERVICES


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    # A service answers these at once; a hang is a failure to report, not to wait out for minutes.
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.text()


def service_argv(launch: str, name: str) -> list[str]:
    if launch == "module":
        return [sys.executable, "-m", f"services.{name}"]
    return [sys.executable, "-m", "stamen", "service", name]


@pytest.mark.parametrize("launch", ["module", "console"])
@pytest.mark.parametrize("name", SERVICES)
async def test_service_runs_alone_and_stops_cleanly(
    name: str, launch: str, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "STAMEN_HTTP_PORT": str(port),
        "STAMEN_LOG_FORMAT": "json",
        "STAMEN_API_KEY_PEPPER": "pepper-for-tests",  # the portal (auth on) does not start without one
    }
    proc = subprocess.Popen(
        service_argv(launch, name), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, body = await get(session, f"{base}/readyz")
                    if status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"{name} not ready:\n{log.read_text()}"
                await asyncio.sleep(0.2)
            assert '"postgres": "ok"' in body and '"nats": "ok"' in body
            assert (await get(session, f"{base}/healthz"))[0] == 200
            status, metrics = await get(session, f"{base}/metrics")
            assert status == 200 and "stamen_outbox_published_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    output = log.read_text()
    assert code == 0, output
    # Every line a service writes, its own or a library's, is one JSON object naming the service.
    lines = []
    for text in output.splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            raise AssertionError(f"{name}: a log line is not JSON: {text!r}\n{output}") from None
    assert all(line.get("service") == name for line in lines), output
    assert "service.draining" in {line.get("event") for line in lines}


def test_console_entry_refuses_an_unknown_service() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stamen", "service", "teleporter"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "error [UNKNOWN_SERVICE]: unknown service 'teleporter'" in done.stderr
    assert all(name in done.stderr for name in SERVICES)


def test_services_run_on_uvloop_unless_told_otherwise(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """A service's `service.listening` line names its loop: uvloop by default (a dependency on Linux),
    asyncio's own when STAMEN_EVENT_LOOP=asyncio."""
    seen = {}
    for choice in ("auto", "asyncio"):
        log = tmp_path / f"{choice}.log"
        env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url, "STAMEN_HTTP_PORT": str(free_port()),
               "STAMEN_LOG_FORMAT": "json", "STAMEN_EVENT_LOOP": choice}  # fmt: skip
        proc = subprocess.Popen(service_argv("module", "diagnostics"), env=env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while '"service.listening"' not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        line = next(json.loads(t) for t in log.read_text().splitlines() if '"service.listening"' in t)
        seen[choice] = line["event_loop"]
    assert seen == {"auto": "uvloop", "asyncio": "asyncio"}
