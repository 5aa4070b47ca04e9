"""A probe round is bounded even by a client that does not end when cancelled (closing a connection to a
server that vanished can wait on it): the round goes on, and the region's loss is still seen."""

from __future__ import annotations

import asyncio
from typing import Any

from services.regions.probes import run_probe, within
from stamen.domain.regions import ProbeKind


class StubbornClient:
    """Waits until released, whatever cancels it: what a client stuck on a lost server looks like."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.cancels = 0

    async def hang(self) -> dict[str, Any]:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.cancels += 1  # swallowed, as such a client does
        return {}


class StubbornProbe:
    kind = ProbeKind.NATS
    target = "nats://lost-region:4222"

    def __init__(self) -> None:
        self.client = StubbornClient()

    async def prepare(self) -> None:
        return None

    async def connect(self) -> None:
        return None

    async def check(self) -> dict[str, Any]:
        return await self.client.hang()

    async def reset(self) -> None:
        await self.client.hang()

    async def close(self) -> None:
        return None


async def test_a_probe_whose_client_ignores_cancellation_still_fails_within_the_round() -> None:
    probe = StubbornProbe()
    task = asyncio.ensure_future(run_probe(probe, 0.2))
    try:
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the round waited on a probe that does not end when cancelled"
        result = task.result()
        assert not result.ok
        assert result.detail == "no answer within 0.2s"
        assert probe.client.cancels >= 1  # it was asked to stop, and left to end by itself
    finally:
        probe.client.released.set()
        await asyncio.sleep(0)
        if not task.done():
            await task


async def test_within_returns_the_result_and_raises_a_calls_own_error() -> None:
    async def answer() -> int:
        return 42

    async def refuse() -> int:
        raise ConnectionRefusedError("refused")

    assert await within(answer(), 1.0) == 42
    try:
        await within(refuse(), 1.0)
    except ConnectionRefusedError as exc:
        assert str(exc) == "refused"
    else:
        raise AssertionError("within swallowed the call's error")
