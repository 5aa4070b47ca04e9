"""Starting local runners cheaply: a fork server that has the runner loaded and forks one per step.

Starting `python -m stamen.executors.local_runner` for every step costs a Python interpreter start
(~50 ms of CPU, far more than a short step). Instead, each process that submits local steps starts
one small fork server (`python -m stamen.executors.local_forkserver`, its child, which imports only
the runner) and asks it over a pipe, one JSON line per step, to fork a runner. The forked runner
starts a session of its own and runs `run_runner` exactly as the standalone runner would, so it
outlives the scheduler and the fork server; the fork server reaps runners as they end (no zombies)
and exits when its stdin closes (the submitting process ended).

Requests: {"config": RunnerConfig.to_json(), "log": "<step>.runner.log"}
Replies:   {"pid": <runner pid>, "start_time": "<clock ticks since boot>"} or {"error": "..."}
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from stamen.executors.local_proc import boot_id, process_start_time
from stamen.executors.local_runner import RunnerConfig, record_runner_failure, run_runner


class ForkServerError(RuntimeError):
    """The fork server could not start a runner, or stopped answering."""


# --- the server (its own process) -----------------------------------------------------------------


def _reap_runners(_signum: int = 0, _frame: FrameType | None = None) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def _become_runner(config: RunnerConfig, log: Path, recorded: int) -> NoReturn:
    """In the forked child: detach, point stdio at the runner log, run the step, never return.
    `recorded` is a pipe to the server: one byte once the job file is written."""
    code = 1

    def tell_server() -> None:
        os.write(recorded, b"1")
        os.close(recorded)

    try:
        gc.disable()  # a runner lives briefly and allocates little; a collection would only copy pages
        os.setsid()  # its own session: a signal to the scheduler's group does not reach it
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir(config.workdir)
        devnull = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # Nothing else of the server's (its pipes to the scheduler) stays open in a runner.
        os.closerange(3, recorded)
        os.closerange(recorded + 1, 65536)
        code = run_runner(config, on_recorded=tell_server)
    except BaseException:
        record_runner_failure(config)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _fork_runner(request: dict[str, Any]) -> dict[str, Any]:
    config = RunnerConfig.from_json(request["config"])
    log = Path(request["log"])
    # SIGCHLD blocked until the start time is read: a runner that ended at once is not reaped (and
    # its pid reused) before we could name it.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    try:
        wait_for, recorded = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(wait_for)
            _become_runner(config, log, recorded)
        os.close(recorded)
        with os.fdopen(wait_for, "rb") as answer:
            job_recorded = answer.read(1) == b"1"  # or the end of the pipe: the runner ended before
        start_time = process_start_time(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
    if not job_recorded:
        # It ended before its job file existed, so before any command: nothing runs.
        raise ForkServerError(f"the runner (pid {pid}) failed before it started the step; see {log}")
    if start_time is None:
        raise ForkServerError(f"runner {pid} vanished right after it was forked")
    return {"pid": pid, "start_time": start_time}


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    boot_id()  # read once here, inherited by every runner
    gc.freeze()  # what is loaded now stays shared with the runners (not copied by their collections)
    signal.signal(signal.SIGCHLD, _reap_runners)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the scheduler; we end with our stdin
    for line in requests:
        try:
            reply = _fork_runner(json.loads(line))
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()
    _reap_runners()


# --- the client (in the scheduler) ----------------------------------------------------------------


class ForkServer:
    """The submitting process's fork server: started on first use, started again if it died."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # submits run in worker threads; one request at a time

    @property
    def pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [self.python, "-m", "stamen.executors.local_forkserver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True,
        )  # fmt: skip
        return self._proc

    def start_runner(self, config: RunnerConfig, log: Path) -> tuple[int, str]:
        """Fork a runner for `config`; its pid and start time."""
        request = json.dumps({"config": config.to_json(), "log": str(log)}).encode() + b"\n"
        with self._lock:
            server = self._server()
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
                raise ForkServerError(f"the local fork server stopped answering (exit {server.poll()}): {error}")
        reply = json.loads(line)
        if "error" in reply:
            raise ForkServerError(f"the local fork server could not start the runner: {reply['error']}")
        return int(reply["pid"]), str(reply["start_time"])

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
    """This process's fork server for `python` (one for every LocalExecutor that uses it)."""
    with _servers_lock:
        return _servers.setdefault(python, ForkServer(python))


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
