"""Waiting for child processes to end without polling them.

A pidfd (Linux 5.3+) becomes readable when its process exits, so a supervisor sleeps in select() until a
child dies, it is woken (`Wakeup`), or a deadline passes: no wake-ups while all is well. Where there is no
pidfd (another OS, an old kernel), it looks again every `poll` seconds, as it used to.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
from collections.abc import Iterable


class Wakeup:
    """A self-pipe: `set()`, from any thread or a signal handler, ends the `wait_for_exits` in progress (or
    the next one)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
            os.write(self._write, b"\0")

    def fileno(self) -> int:
        return self._read

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 512):
                pass


def _pidfd(pid: int) -> int | None:
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return None
    try:
        return int(open_pidfd(pid))
    except OSError:  # gone already (reaped), or no pidfds here
        return None


def wait_for_exits(
    procs: Iterable[subprocess.Popen[bytes]], wakeup: Wakeup, timeout: float | None, poll: float
) -> None:
    """Until one of `procs` has ended (not reaped: the caller's `poll()` does that), `wakeup` is set, or
    `timeout` seconds (None: no deadline) have passed; at most `poll` seconds for a process without a pidfd."""
    fds: list[int] = []
    try:
        for proc in procs:
            if proc.returncode is not None:
                return
            fd = _pidfd(proc.pid)
            if fd is None:
                timeout = poll if timeout is None else min(timeout, poll)
            else:
                fds.append(fd)
        select.select([*fds, wakeup.fileno()], [], [], timeout)
        wakeup.clear()
    finally:
        for fd in fds:
            os.close(fd)
