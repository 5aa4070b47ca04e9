"""The submitting process's side of the fork server (`local_forkserver.py`): starts it on first use,
asks it for a runner per step, starts it again if it died, and hears when a runner has finished a job
(the notice pipe). Kept apart from the server so that the server, whose every import each forked
runner pays for, does not load `subprocess`, `threading` and `asyncio`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import stamen
from stamen.executors.local_forkserver import IDLE_RUNNER_SECONDS, MAX_IDLE_RUNNERS, ForkServerError
from stamen.executors.local_runner_config import RunnerConfig

__all__ = ["ForkServer", "ForkServerError", "RunnerJob", "fork_server"]

# The folder that holds the stamen package: the fork server's whole import path. It runs isolated and
# without `site` (no site-packages, no .pth hooks, no PYTHON* variables): it needs only the standard
# library and stamen.executors, and every module it loads makes each fork of it dearer.
_STAMEN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(stamen.__file__ or "")))
_SERVER_MAIN = (
    "import sys; sys.path[:0] = sys.argv[1:2]; from stamen.executors.local_forkserver import main; "
    "main(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))"
)


class RunnerJob(NamedTuple):
    """Who runs a step: the runner's pid and start time, and the job's number among the runner's."""

    pid: int
    start_time: str
    job: int

    @property
    def job_id(self) -> str:
        """Unique among the runner's jobs: a runner runs one job after another, of any workset."""
        return f"{self.pid}.{self.job}"


class ForkServer:
    """The submitting process's fork server: started on first use, started again if it died."""

    def __init__(
        self, python: str = sys.executable, idle_runner_seconds: float = IDLE_RUNNER_SECONDS,
        max_idle_runners: int = MAX_IDLE_RUNNERS,
    ) -> None:  # fmt: skip
        self.python = python
        # A runner waits this long for another step before it ends; at most this many wait.
        self.idle_runner_seconds = idle_runner_seconds
        self.max_idle_runners = max_idle_runners
        self._proc: subprocess.Popen[bytes] | None = None
        # The environment the running server was started with (its first line), and os.environ's own
        # mapping then: while that is unchanged, a request's environment is the step's variables alone.
        self._base_env: dict[str, str] = {}
        self._base_data: Any = None
        self._lock = threading.Lock()  # submits run in worker threads; one request at a time
        # A byte from a runner each time it has finished a job (its status written). One pipe for the
        # life of this object: every server started has its write end, and so every runner.
        self._notices_read, self._notices_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[Callable[[list[int]], None]] = []
        self._unread = b""  # the start of a notice whose end is still in the pipe
        # Per runner: jobs given to it and job ends it announced, while a loop hears the notices
        # (`all_announced`). Given from worker threads (submit), announced in the loop: under a lock.
        self._counts_lock = threading.Lock()
        self._given: dict[int, int] = {}
        self._announced: dict[int, int] = {}

    @property
    def pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        # Started with this process's environment as it is now, which its first line also tells it:
        # each request then carries only what differs from it (`_environment_changes`).
        self._base_data = dict(getattr(os.environ, "_data", {}))
        self._base_env = dict(os.environ)
        self._proc = subprocess.Popen(
            [self.python, "-I", "-S", "-c", _SERVER_MAIN, _STAMEN_ROOT, str(self._notices_write),
             repr(self.idle_runner_seconds), str(self.max_idle_runners)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True,
            pass_fds=(self._notices_write,), env=self._base_env,
        )  # fmt: skip
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"env": self._base_env}).encode() + b"\n")
        return self._proc

    def _environment_changes(self) -> tuple[dict[str, str], list[str]]:
        """How this process's environment differs from the one the server was started with: variables
        set or changed, variables removed. (Comparing os.environ's own mapping of bytes costs a
        fraction of a microsecond; making a dict of os.environ, tens.)"""
        data = getattr(os.environ, "_data", None)
        if data is not None and data == self._base_data:
            return {}, []
        current, base = dict(os.environ), self._base_env
        changed = {name: value for name, value in current.items() if base.get(name) != value}
        return changed, [name for name in base if name not in current]

    def on_job_end(self, callback: Callable[[list[int]], None]) -> None:
        """From the running event loop: call `callback` in it, with the pids of the runners, whenever
        runners of this server have finished a job. One loop at a time: a new loop takes over (the old
        one's callbacks are dropped)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._notices_read)
            self._loop, self._listeners = loop, []
            loop.add_reader(self._notices_read, self._heard)
        if callback not in self._listeners:
            self._listeners.append(callback)

    def _heard(self) -> None:
        data = self._unread
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._notices_read, 4096):
                data += chunk
        *lines, self._unread = data.split(b"\n")
        pids = [int(line) for line in lines if line.isdigit()]
        with self._counts_lock:
            for pid in pids:
                # Never more than it was given here while counting: a runner also runs jobs given before
                # a loop heard (or by another loop), whose notices must not stand for a later job's end.
                # (A notice heard before its job was counted is dropped: the exit is then told, once.)
                if (announced := self._announced.get(pid, 0)) < self._given.get(pid, 0):
                    self._announced[pid] = announced + 1
        for callback in list(self._listeners):
            callback(pids)

    def start_runner(self, config: RunnerConfig, log: str) -> RunnerJob:
        """Have a runner run `config`: who runs it. `config.env`: the step's own variables, over this
        process's environment as it is now (as for a child started now)."""
        if not config.job_file or config.submission is None:
            raise ForkServerError("a runner needs its job file and submission (workset, attempt, step)")
        with self._lock:
            server = self._server()
            request = (
                json.dumps({"config": config.to_request(*self._environment_changes()), "log": log}).encode()
                + b"\n"
            )
            assert server.stdin is not None and server.stdout is not None
            error: OSError | None = None
            try:
                server.stdin.write(request)
                server.stdin.flush()
                line = server.stdout.readline()
            except OSError as exc:
                line, error = b"", exc
            if not line:
                # It died with our request: whether it forked a runner is unknown, so this is an error
                # (the step's job file says, if a runner started), never a silent second attempt.
                raise ForkServerError(
                    f"the local fork server stopped answering (exit {server.poll()}): {error}"
                )
        reply = json.loads(line)
        if "error" in reply:
            raise ForkServerError(f"the local fork server could not start the runner: {reply['error']}")
        job = RunnerJob(int(reply["pid"]), str(reply["start_time"]), int(reply["job"]))
        if self._loop is not None:  # its notices are heard (else nobody asks `all_announced`)
            with self._counts_lock:
                self._given[job.pid] = self._given.get(job.pid, 0) + 1
        return job

    def all_announced(self, pid: int) -> bool:
        """Runner `pid` has ended: had it announced the end of every job it was given (as counted while
        a loop heard the notices)? Asked once per runner: its counts are dropped. False for a runner
        this server did not give a job to while counting, or one whose notice is missing (killed mid-step,
        or the pipe was full), so its exit is told."""
        with self._counts_lock:
            given, announced = self._given.pop(pid, 0), self._announced.pop(pid, 0)
        return given > 0 and announced >= given

    def stop(self) -> None:
        """Close its stdin so it exits (runners it started keep running)."""
        with self._lock:
            if self._proc is not None:
                with contextlib.suppress(OSError):
                    if self._proc.stdin is not None:
                        self._proc.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(5)
                self._proc = None


_servers: dict[str, ForkServer] = {}
_servers_lock = threading.Lock()


def fork_server(python: str = sys.executable) -> ForkServer:
    """This process's fork server for `python` (one for every LocalExecutor that uses it). Made once:
    a ForkServer opens its notice pipe when made (`setdefault(python, ForkServer(python))` made one per
    call, twice a step, and left its two descriptors open)."""
    server = _servers.get(python)
    if server is None:
        with _servers_lock:
            server = _servers.get(python)
            if server is None:
                server = _servers[python] = ForkServer(python)
    return server
