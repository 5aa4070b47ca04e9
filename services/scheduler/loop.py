"""The scheduler's heartbeat: evacuate down regions, admit, dispatch, carry out cancels, poll jobs; sleep until woken.

A pass follows a pass that did anything at once; otherwise the loop sleeps `poll_seconds` (running jobs
are polled, slots and grace periods looked at again) or is woken first (a workset queued, a region's
health changed, a timer fired, a local step ended). When nothing at all is queued, admitted or running,
nothing can change but through one of those wake-ups, so while they can arrive (`events_flow`: the
service consumes its events) it sleeps `idle_poll_seconds` instead: an idle scheduler costs one survey
per `idle_poll_seconds`, not one a second. Without events (NATS away) it polls as usual, since then
the database is the only way to learn of queued work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.evacuation import RegionEvacuation
from services.scheduler.monitor import JobMonitor
from stamen.bus.consumer import DependencyGate
from stamen.store.survey import survey

log = structlog.get_logger(__name__)


class SchedulerLoop:
    def __init__(
        self,
        pool: asyncpg.Pool,
        admitter: Admitter,
        dispatcher: Dispatcher,
        monitor: JobMonitor,
        poll_seconds: float,
        postgres: DependencyGate | None = None,
        evacuation: RegionEvacuation | None = None,
        idle_poll_seconds: float | None = None,
        events_flow: Callable[[], bool] | None = None,
    ) -> None:
        self._pool = pool
        self._postgres = postgres
        self._admitter = admitter
        self._dispatcher = dispatcher
        self._monitor = monitor
        self._evacuation = evacuation
        self._poll_seconds = poll_seconds
        self._idle_poll_seconds = idle_poll_seconds
        self._events_flow = events_flow
        self.idle = False  # the last pass found nothing queued, admitted or running
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                busy = await self.tick()
            except Exception as exc:  # a database or cluster hiccup must not end the scheduler
                if self._postgres is not None and not await self._postgres.check():
                    log.warning("scheduler.waiting_for_postgres", error=str(exc))
                    await self._postgres.wait_reachable()  # then straight into the next pass
                    continue
                log.exception("scheduler.tick_failed", error=str(exc))
                busy = False
            if busy:
                continue  # something changed: a slot may be free or a next step due
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.sleep_seconds())

    def sleep_seconds(self) -> float:
        """How long to wait for a wake-up after a pass that did nothing."""
        events_flow = self._events_flow is not None and self._events_flow()
        if self.idle and events_flow and self._idle_poll_seconds is not None:
            return max(self._poll_seconds, self._idle_poll_seconds)
        return self._poll_seconds

    async def tick(self) -> bool:
        """One pass. The survey (one read-only transaction) says which parts have work; the others
        are skipped rather than each spend a transaction finding nothing."""
        async with self._pool.acquire() as conn:
            todo = await survey(
                conn,
                global_max=self._admitter.global_max,
                submit_grace_seconds=self._dispatcher.submit_grace_seconds,
            )
        self.idle = not todo.in_flight
        evacuated = await self._evacuation.run_once() if self._evacuation and todo.stranded else 0
        # Worksets the evacuation queued again are placed elsewhere in the same pass.
        admitted = await self._admitter.admit_all() if todo.admissible or evacuated else []
        dispatched = 0
        # Worksets admitted in this pass are the dispatcher's too, unless admission submitted their
        # first step itself (as the scheduler's wiring has it).
        to_dispatch = todo.undispatched + (0 if self._admitter.dispatches else len(admitted))
        if to_dispatch or todo.stale_submissions:
            # As many claims as there is work known now: no last claim that finds nothing (what
            # appears meanwhile is found by the next pass, which follows at once).
            dispatched = await self._dispatcher.dispatch_pending(
                reconcile=todo.stale_submissions, limit=to_dispatch
            )
        if todo.stop_requested:
            await self._monitor.stop_requested()
        # The running steps as the survey read them: a step submitted in this pass is polled by the
        # next one (its exit wakes the loop anyway).
        finished = await self._monitor.poll_once((todo.clusters, todo.active))
        return bool(evacuated or admitted or dispatched or finished)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
