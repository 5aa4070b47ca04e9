"""An unreachable dependency is probed every second however long it has been away, so a service is
back within about a second of its PostgreSQL (the probe delays used to grow to 5 s: ~2.5 s more on
average after every long outage, for every service)."""

from __future__ import annotations

import asyncio

import pytest

from stamen.service import dependencies
from stamen.service.dependencies import Dependency, StartupWaits, open_when_reachable


@pytest.fixture
def waited(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the module sleeps, each taken at once (no real waiting)."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(dependencies.asyncio, "sleep", sleep)
    return delays


async def test_a_long_outage_is_probed_every_second(waited: list[float]) -> None:
    failures = 30  # a long outage: 30 failed probes

    async def probe() -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionRefusedError("down")

    dependency = Dependency("postgres", probe)
    assert not await dependency.check()
    await asyncio.wait_for(dependency.wait_reachable(), 5)
    assert dependency.reachable
    assert len(waited) == 30 and waited[0] == 0.5
    assert max(waited) == 1.0


async def test_a_service_started_during_an_outage_tries_every_second(waited: list[float]) -> None:
    failures = 20

    async def opener() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionRefusedError("down")
        return "pool"

    assert await open_when_reachable("postgres", opener, StartupWaits()) == "pool"  # type: ignore[arg-type,comparison-overlap]
    assert len(waited) == 20 and max(waited) == 1.0
