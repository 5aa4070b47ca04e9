"""Noticing at once that a local runner has ended: a pidfd per runner, watched by the event loop (a
killed runner, or one of an earlier scheduler; a runner that has finished a step and waits for another
says so on the fork server's notice pipe, `local_forkserver_client.py`, which calls `notify`).

A runner is not the scheduler's child (the fork server is its parent), so there is no SIGCHLD to
wait for; a pidfd (Linux 5.3+) becomes readable when the process it names exits, whoever its parent.
The watcher only says "a job ended, poll now": what ended and how is still read from the step's files
by `poll`, so a missed or doubled notice changes nothing but latency.

The exit of a runner that has announced the end of every job given to it here (a waiting runner told
to end by the fork server, or idle for too long) is not told again: it would only have the
scheduler poll once more for nothing (a step a workset: an extra wake-up and poll per step). A runner
killed mid-step, one whose notice was lost (the pipe full) or one this process did not give its job to
(adopted after a restart) has announced less than it was given: its exit is told. The fork server's
client counts both (`ForkServer.all_announced`): it gives every job and hears every notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from stamen.executors.local_proc import process_is_alive


class ExitWatcher:
    def __init__(self, all_announced: Callable[[int], bool] = lambda _pid: False) -> None:
        # Whether runner pid, now ended, had announced the end of every job given to it (asked once).
        self._all_announced = all_announced
        self._callbacks: list[Callable[[], None]] = []
        self._watched: dict[int, tuple[asyncio.AbstractEventLoop, int]] = {}  # runner pid -> (loop, pidfd)

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    @property
    def subscribed(self) -> bool:
        return bool(self._callbacks)

    def notify(self, _runners: list[int] | None = None) -> None:
        """Call the subscribers: a job has ended (told by the fork server's notice pipe)."""
        self._notify()

    def watch(self, pid: int, start_time: str) -> None:
        """Call the subscribers when runner `pid` (started at `start_time`) exits. From the event loop."""
        if not self._callbacks or pid in self._watched:
            return
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            self._all_announced(pid)  # its counts go: it is not watched
            self._notify()  # gone already
            return
        # Opened on a pid: make sure it is still our runner, not a process that reused the number.
        if not process_is_alive(pid, start_time):
            os.close(pidfd)
            self._all_announced(pid)
            self._notify()
            return
        self._watched[pid] = (loop, pidfd)
        loop.add_reader(pidfd, self._exited, pid)

    def _exited(self, pid: int) -> None:
        loop, pidfd = self._watched.pop(pid)
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if self._all_announced(pid):
            return  # the end of every job it was given has been told: its exit tells nothing new
        self._notify()

    def _notify(self) -> None:
        for callback in self._callbacks:
            callback()

    def close(self) -> None:
        for loop, pidfd in self._watched.values():
            with contextlib.suppress(Exception):
                loop.remove_reader(pidfd)
            os.close(pidfd)
        self._watched.clear()
