"""The exit follower: records the end of a step this scheduler submitted as soon as its job's exit is told,
beside the loop's passes rather than at the next one.

The loop's pass polls every running step, then admits, dispatches and stops jobs, one part after the
other. An exit told while a pass runs waited for the rest of that pass and the next survey (~35 ms of the
~50 ms a local step took from one submission to the next in `bench/lifecycle.py`). The follower keeps the
steps whose job handles this process's dispatcher stored, on clusters whose executor tells exits (the
local one), and polls and records those when an exit is told, in a task of its own: the next step is
submitted by that recording, and the loop is woken only when a workset gave its slot back (admission's
part) or an exit was told that none of its steps explains (a step the loop polls: another scheduler's, one
adopted after a restart, or one whose handle was not stored yet when its exit came).

Recording an end is safe from any task or replica (the step run's row lock, skipped if held, and its state
make exactly one of them record it); the loop's pass leaves the followed steps to the follower, so the two
do not poll and record the same end. A followed step is polled at least every `poll_seconds` even if no
exit is told (a lost notice costs latency, not the end)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from services.scheduler.executors import ExecutorRegistry
from services.scheduler.monitor import JobMonitor, PollOutcome
from stamen.store.clusters import ClusterRecord
from stamen.store.step_runs import StepRunRow

log = structlog.get_logger(__name__)


class ExitFollower:
    def __init__(self, monitor: JobMonitor, executors: ExecutorRegistry, poll_seconds: float) -> None:
        self._monitor = monitor
        self._executors = executors
        self._poll_seconds = poll_seconds
        self._following: dict[int, tuple[StepRunRow, ClusterRecord]] = {}
        self._told = asyncio.Event()
        self._unexplained = False  # the last exit told was of no followed step
        self._running = False
        self._stopping = False
        # Called when the loop has work: a slot given back, or an exit the follower cannot explain.
        self.wake_loop: Callable[[], None] = lambda: None

    @property
    def following(self) -> frozenset[int]:
        """The step runs this follower polls (the loop's pass skips them); none while it does not run."""
        return frozenset(self._following)

    def follow(self, row: StepRunRow, cluster: ClusterRecord) -> None:
        """A step whose job handle was just stored (the dispatcher's `on_running`)."""
        if not self._running or not self._executors.reports_exits(cluster):
            return  # left to the loop's pass
        self._following[row.id] = (row, cluster)
        if self._unexplained:
            self._told.set()  # its exit may have been told before its handle was stored

    def exit_told(self) -> None:
        """A job of an executor that tells exits ended (the registry's `on_job_exit`)."""
        self._told.set()

    async def run(self) -> None:
        self._running = True
        try:
            while not self._stopping:
                # With nothing followed there is nothing to poll: only a told exit (to pass on) wakes it.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._told.wait(), self._poll_seconds if self._following else None)
                told = self._told.is_set()
                self._told.clear()
                if self._stopping:
                    break
                try:
                    outcome = await self.poll_once()
                except Exception as exc:  # the loop's pass polls what was not recorded (no longer followed)
                    log.warning("scheduler.exit_follower_failed", error=str(exc))
                    self.wake_loop()
                    await asyncio.sleep(self._poll_seconds)
                    continue
                self._unexplained = told and not outcome.finished
                if outcome.released or self._unexplained:
                    self.wake_loop()
        finally:
            self._running = False
            self._following.clear()

    async def poll_once(self) -> PollOutcome:
        """Poll the followed steps; record those that ended (they are no longer followed: one that cannot
        be recorded now is left to the loop's pass)."""
        by_cluster: dict[str, tuple[ClusterRecord, list[StepRunRow]]] = {}
        for row, cluster in self._following.values():
            by_cluster.setdefault(cluster.name, (cluster, []))[1].append(row)
        if not by_cluster:
            return PollOutcome()
        ended = await self._monitor.ended(list(by_cluster.values()))
        for row, _ in ended:
            self._following.pop(row.id, None)
        return await self._monitor.record_ends(ended)

    def stop(self) -> None:
        self._stopping = True
        self._told.set()
