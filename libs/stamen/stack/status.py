"""The one-screen status of a running embedded stack."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from stamen.domain.lifecycle import TERMINAL_STATES, WorksetState
from stamen.stack.launcher import read_stack_file
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork


async def _readiness(session: aiohttp.ClientSession, info: dict[str, Any]) -> str:
    """The service's own word on its readiness, if the process that answers is the one the launcher
    started (its name and pid): a port answered by anything else says nothing about this service."""
    try:
        async with session.get(f"{info['url']}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"down ({type(exc).__name__})"
    if not isinstance(body, dict):
        return "down (not a stamen service)"
    service, pid = body.get("service"), body.get("pid")
    expected = info.get("service")
    if (expected and service != expected) or (info.get("pid") and pid != info["pid"]):
        return f"wrong process ({service} pid {pid} answers on this port)"
    return str(body.get("status", resp.status))


async def stack_status(
    database_url: str,
    state_dir: Path,
    *,
    wait_ready: float | None = None,
    wait_for_workset: str | None = None,
    wait_seconds: float = 90.0,
) -> dict[str, Any]:
    doc = read_stack_file(state_dir) or {}
    services: dict[str, Any] = doc.get("services", {})
    result: dict[str, Any] = {
        "state_dir": str(state_dir),
        "nats_url": redact_url(doc.get("nats_url")),
        "database_url": redact_url(database_url),
        "aws_endpoint_url": doc.get("aws_endpoint_url"),
        "embedded": doc.get("embedded", []),
        "services": {},
    }
    deadline = time.monotonic() + (wait_ready or 0)
    async with aiohttp.ClientSession() as session:
        while True:
            # Read again each time: a service restarted meanwhile has a new pid.
            services = (read_stack_file(state_dir) or {}).get("services", services)
            states = await asyncio.gather(*(_readiness(session, s) for s in services.values()))
            result["services"] = {
                name: {**info, "status": st}
                for (name, info), st in zip(services.items(), states, strict=True)
            }
            if all(st == "ready" for st in states) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    pool = await create_pool(database_url, max_size=1)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            async with UnitOfWork(pool) as uow:
                result["worksets_by_state"] = await uow.worksets.count_by_state()
                if wait_for_workset:
                    ws = await uow.worksets.get(wait_for_workset)
                    history = await uow.worksets.history(wait_for_workset)
                    result["demo"] = {
                        "id": ws.id,
                        "state": ws.state.value,
                        "history": [
                            f"{h.from_state or '-'} -> {h.to_state} ({h.actor}: {h.reason})" for h in history
                        ],
                    }
            # The demo is "through" once it is final, or failed (the diagnosis is then on its way).
            at_rest = {WorksetState.FAILED.value, *(s.value for s in TERMINAL_STATES)}
            if not wait_for_workset or result["demo"]["state"] in at_rest or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await pool.close()
    return result


def redact_url(url: str | None) -> str | None:
    """The URL with its password replaced by ***, for screens and logs."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def render_status(status: dict[str, Any], portal_url: str | None) -> str:
    lines = ["", "stamen is running", "=================="]
    if portal_url:
        lines.append(f"portal:     {portal_url}")
    lines.append(f"state dir:  {status['state_dir']}")
    embedded = set(status.get("embedded", []))
    for key, label in (("nats_url", "nats"), ("database_url", "postgres"), ("aws_endpoint_url", "moto")):
        origin = "embedded" if label in embedded else "external"
        lines.append(f"{label + ':':<11} {redact_url(status.get(key))}  ({origin})")
    lines.append("services:")
    for name, info in status.get("services", {}).items():
        lines.append(f"  {name:<12} {info.get('status', '?'):<10} {info.get('url')}  pid={info.get('pid')}")
    counts = status.get("worksets_by_state", {})
    lines.append("worksets:   " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"))
    if "demo" in status:
        demo = status["demo"]
        lines.append(f"demo workset {demo['id']}: {demo['state']}")
        lines += [f"  {h}" for h in demo["history"]]
    return "\n".join(lines)
