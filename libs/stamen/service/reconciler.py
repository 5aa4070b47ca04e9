"""Reconcilers: passes that drive worksets forward from PostgreSQL alone, whether or not an event arrives.

Events are the fast path; the database is the truth. Each service runs, every
STAMEN_RECONCILE_INTERVAL_SECONDS, the passes for the states it moves on (the validator: submitted;
diagnostics: failed without a diagnosis; the scheduler: failed with a diagnosis not acted on, retry_wait
without a timer; every consumer's service: its own parked messages in STAMEN_DLQ). A pass looks only at
worksets that have waited longer than STAMEN_RECONCILE_AFTER_SECONDS and hands each to the consumer's
own handler under the consumer's inbox claim, so a lost or parked event delays a workset but never
strands it, and nothing is done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from stamen.bus.consumer import Delivery, DependencyGate, EventHandler, RetryLater
from stamen.events.envelope import Envelope, UndecodableMessage
from stamen.store.errors import WorksetNotFound
from stamen.store.recovery import Unsettled

log = structlog.get_logger(__name__)

# What a handler is told about a "delivery" that is a reconciler's: the first, so a handler that would
# give up on a last delivery (e.g. reject on unreachable storage) waits for the next pass instead.
RECONCILED = Delivery(subject="(reconciler)", stream_seq=0, num_delivered=1, headers={})


@dataclass(frozen=True)
class ReconcilePass:
    name: str
    run: Callable[[], Awaitable[int]]  # returns how many it moved on


class Reconciler:
    def __init__(
        self, passes: list[ReconcilePass], *, interval_seconds: float, postgres: DependencyGate | None
    ) -> None:
        self._passes = passes
        self._interval = interval_seconds
        self._postgres = postgres
        self._stop = asyncio.Event()

    async def run_once(self) -> dict[str, int]:
        moved: dict[str, int] = {}
        for p in self._passes:
            try:
                moved[p.name] = await p.run()
            except Exception as exc:
                if self._postgres is not None and not await self._postgres.check():
                    log.warning("reconcile.waiting_for_postgres", reconciler=p.name)
                    await self._postgres.wait_reachable()
                    continue
                log.exception("reconcile.failed", reconciler=p.name, error=str(exc))
                continue
            if moved[p.name]:
                log.info("reconcile.moved", reconciler=p.name, worksets=moved[p.name])
        return moved

    async def run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if not self._stop.is_set():
                await self.run_once()

    def stop(self) -> None:
        self._stop.set()


async def hand_over(
    waiting: Sequence[Unsettled],
    *,
    event_for: Callable[[Unsettled], Awaitable[Envelope]],
    handler: EventHandler,
    moved_on: Callable[[Unsettled], Awaitable[bool]],
    what: str,
) -> int:
    """Hand each waiting workset's event to the consumer's own handler, as a first delivery; returns how
    many moved on. A handler that asks to be tried later (RetryLater), or an event whose workset is gone
    meanwhile, leaves that workset for the next pass."""
    moved = 0
    for item in waiting:
        try:
            await handler(await event_for(item), RECONCILED)
        except RetryLater as later:
            log.info("reconcile.deferred", reconciler=what, workset_id=item.workset_id, reason=str(later))
            continue
        except (WorksetNotFound, UndecodableMessage):
            continue
        if await moved_on(item):
            log.warning(f"reconcile.{what}", workset_id=item.workset_id, attempt=item.attempt,
                        waited_seconds=round(item.age_seconds))  # fmt: skip
            moved += 1
    return moved
