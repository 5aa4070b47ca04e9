"""Whether this process can reach what it depends on, and waiting until it can.

A handler that failed while PostgreSQL is unreachable has not failed on its own account: running it
again later succeeds. So the failure is not counted against the message (no nak, no redelivery, the
delivery budget is untouched): the service marks the dependency unreachable, stops taking new work,
reports not ready, and probes until the dependency answers; then the waiting work runs again.
"Unreachable" is what a probe of the dependency says, not a guess from the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from stamen.service.backoff import FailureBackoff
from stamen.store.db import create_pool, is_unreachable

log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[object]]
PROBE_TIMEOUT_SECONDS = 3.0
# Delays between probes of an unreachable dependency: 0.5 s, then every second however long it has been
# away. A probe of a server that is down is a refused connection (it costs nothing), and the delay is
# what a service adds to the outage once the server is back: a cap of 5 s made it ~2.5 s on average.
PROBE_BACKOFF: tuple[float, float] = (0.5, 1.0)


class Dependency:
    """One external dependency as this process sees it: reachable (the gate is open) or not.

    `report_failure` closes the gate and starts a probe loop (one per dependency, however many callers
    report); the loop opens the gate again once the probe succeeds. Work waits with `wait_reachable`."""

    def __init__(
        self,
        name: str,
        probe: Probe,
        *,
        backoff: tuple[float, float] = PROBE_BACKOFF,
    ) -> None:
        self.name = name
        self._probe = probe
        self._backoff = backoff
        self._reachable = asyncio.Event()
        self._reachable.set()
        self._since = 0.0
        self._last_error = ""
        self._prober: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        return self._reachable.is_set()

    def status(self) -> str:
        """For /readyz: "ok", or why not and for how long."""
        if self.reachable:
            return "ok"
        return f"error: unreachable for {time.monotonic() - self._since:.0f}s: {self._last_error}"

    async def check(self) -> bool:
        """Probe now: True if the dependency answers. A failed probe closes the gate (and probing goes on
        in the background until it answers)."""
        try:
            await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_SECONDS)
        except Exception as exc:
            self.report_failure(exc)
            return False
        return True

    def report_failure(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self._reachable.is_set():
            self._reachable.clear()
            self._since = time.monotonic()
            log.warning("dependency.unreachable", dependency=self.name, error=self._last_error)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe_until_reachable(), name=f"probe:{self.name}")

    async def wait_reachable(self) -> None:
        await self._reachable.wait()

    async def _probe_until_reachable(self) -> None:
        backoff = FailureBackoff(*self._backoff)
        while True:
            await asyncio.sleep(backoff.failed())
            try:
                await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_SECONDS)
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]
                continue
            break
        log.info(
            "dependency.reachable",
            dependency=self.name,
            after_seconds=round(time.monotonic() - self._since, 1),
        )
        self._reachable.set()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober


def postgres_dependency(pool: asyncpg.Pool) -> Dependency:
    async def probe() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    return Dependency("postgres", probe)


class StartupWaits:
    """What a starting service is still waiting for (its /readyz says so while it starts)."""

    def __init__(self) -> None:
        self.waiting: dict[str, str] = {}


async def open_when_reachable(
    name: str,
    opener: Callable[[], Awaitable[asyncpg.Pool]],
    waits: StartupWaits,
    *,
    backoff: tuple[float, float] = PROBE_BACKOFF,
) -> asyncpg.Pool:
    """Open a dependency at start-up, waiting (with growing delays, logged) until it answers: a service
    started before its database, or during an outage, waits instead of exiting."""
    delays = FailureBackoff(*backoff)
    while True:
        try:
            opened = await opener()
        except Exception as exc:
            # A database not created yet is waited for too (a new server is being set up); a wrong
            # password is not: waiting does not fix it.
            if not (is_unreachable(exc) or isinstance(exc, asyncpg.InvalidCatalogNameError)):
                raise
            delay = delays.failed()
            waits.waiting[name] = f"waiting: {type(exc).__name__}: {exc}"[:300]
            log.warning("service.waiting_for", dependency=name, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            continue
        waits.waiting.pop(name, None)
        if delays.failures:
            log.info("service.dependency_up", dependency=name, after_tries=delays.failures + 1)
        return opened


async def create_pool_when_reachable(dsn: str, waits: StartupWaits) -> asyncpg.Pool:
    return await open_when_reachable("postgres", lambda: create_pool(dsn), waits)
