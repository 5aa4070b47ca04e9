"""Each service as its own process: health, readiness, metrics, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
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
    async with session.get(url) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("name", SERVICES)
async def test_service_runs_alone_and_stops_cleanly(
    name: str, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "DATABASE_URL": database_url, "NATS_URL": nats_url, "STAMEN_HTTP_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
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
    assert code == 0, log.read_text()
    assert "service.draining" in log.read_text()
