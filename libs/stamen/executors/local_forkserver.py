"""Starting local runners cheaply: a fork server that has the runner loaded, forks runners and gives
a runner that has finished its job the next step submitted, of any workset.

Starting `python -m stamen.executors.local_runner` for every step costs a Python interpreter start
(~50 ms of CPU, far more than a short step). Instead, each process that submits local steps starts
one small fork server (`python -I -S -c ...local_forkserver import main...`, its child, which imports
only the runner) and asks it over a pipe, one line per step, for a runner (the asking side is
`local_forkserver_client.py`). A runner is a forked child of the server in a session of its own: it
outlives the scheduler and the fork server. It reads a job from its request pipe, writes the job's
file, answers on its reply pipe, runs the step as the standalone runner would (but appends the
command's start and the status to the job file, `local_files.py`), says "idle" on its reply pipe and
tells the submitting process (its pid on the notice pipe).
The server gives the next step to the runner that became idle last, and forks a runner only when none
is idle. It answers once the job file is written, reaps runners as they end (no zombies) and exits
when its stdin closes (the submitting process ended); it then closes the runners' request pipes, so a
waiting runner ends at once (reaped here first) and a busy one after its step. A runner idle for
IDLE_RUNNER_SECONDS ends by itself (an idle stack keeps no process awake), and at most
MAX_IDLE_RUNNERS wait (more end, the longest waiting first).

Why runners are used again: a fresh fork copies every page it writes (~470 per runner for a `true`
step) and pays the fork and the exit of a 13 MB process, ~2-3 ms of CPU per step in all; a runner that
has run a step has those pages already and runs the next for ~0.5-1 ms. A job's id is "<runner
pid>.<its number among the runner's jobs>", so two jobs of one runner (a workset's last step not yet
recorded, another workset's first already submitted) never share an id. A runner whose job was
cancelled takes no other job (it looks at the job's cancel marker after writing its status), so the
SIGKILL of a cancel that timed out can only reach a runner that runs the cancelled job or is ending
(docs/pipelines.md). Nothing of a job stays in the runner for the next: the command's environment
and working directory are the step's, it inherits no descriptor but its stdio, and its processes are
all reaped before the runner says "idle" (a runner that could not reap them all takes no other job).

First line (server): {"env": {...}}: the environment the server was started with, over which each
                    request's environment is told (read here: the server's own `os.environ` is not
                    it exactly, Python may add LC_CTYPE at start)
Requests (server):  {"config": RunnerConfig.to_request(), "log": "<step>.runner.log"}
Replies (server):   {"pid": <runner pid>, "start_time": "<clock ticks since boot>", "job": <n>}
                    or {"error": "..."}
Runner -> server:   "<start time> <n>\n" once job n's file is written, "idle\n" once it may take another
Runner -> notices:  "<runner pid>\n" once the job's status is written

The server runs in an isolated interpreter without `site` (`python -I -S`, the folder of the stamen
package alone on its path) and loads no module a runner does not need: a smaller process is cheaper
to fork and to end (15.0 -> 13.6 MB).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import IO, NoReturn

from stamen.executors.local_proc import boot_id, proc_stat_fields
from stamen.executors.local_runner import (
    CANCEL_CHECK_SIGNAL,
    Wakeups,
    record_runner_failure,
    run_job,
    start_job_record,
    start_runner_process,
)
from stamen.executors.local_runner_config import RunnerConfig

# What this process imports is what every runner it forks pays for: a forked child runs the
# interpreter's at-fork hooks and copies every page it writes. `threading` (which `subprocess` imports)
# alone adds an at-fork hook that cost each runner ~0.4 ms of CPU (140 more page copies), so the
# client side, which needs both, is a module of its own.

# Runners kept waiting for a next step; more are told to end, the longest waiting first. A runner ends
# after this many jobs, or once it has waited this long for one (a sleeping runner costs no CPU, but an
# idle stack should keep no process for nothing).
MAX_IDLE_RUNNERS = 16
MAX_JOBS_PER_RUNNER = 1000
IDLE_RUNNER_SECONDS = 30.0


class ForkServerError(RuntimeError):
    """The fork server could not start a runner, or stopped answering."""


def _reap_runners(_signum: int = 0, _frame: FrameType | None = None) -> None:
    """Wait for every runner that has ended. Not SIGCHLD ignored (the kernel would reap them for
    us): a runner's CPU then counts nowhere, and bench/local_executor.py measures it here."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
    except ChildProcessError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- a runner (a forked child of the server) -----------------------------------------------------


def _next_request(requests: int, wakeups: Wakeups, idle_seconds: float) -> bytes | None:
    """The next job's request line; None when the server closed the pipe (it ended, or has idle
    runners enough), a stop signal came between jobs, or none came for `idle_seconds` (the server
    then finds the pipe closed, and forks a runner instead: nothing of a step is read here unless it
    is run)."""
    line = b""
    deadline = time.monotonic() + idle_seconds
    while not line.endswith(b"\n"):
        if wakeups.stop_signals:
            return None
        left = deadline - time.monotonic()
        if not line and left <= 0:
            return None
        wakeups.wait(left if not line else None, also=requests)
        try:
            chunk = os.read(requests, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        line += chunk
    return line


def _become_runner(
    requests: int, replies: int, notices: int | None, first: tuple[RunnerConfig, str], idle_seconds: float
) -> NoReturn:
    """In the forked child: detach, then for each job the server sends: write its job file, tell the
    server (on `replies`) its start time and the job's number, run the step (its start and its status
    appended to the job file), tell the server ("idle") and the submitting process (on `notices`); never
    return. A runner that fails before a job's file is
    written runs nothing of it (the server sees `replies` closed without a word and forks another).

    `first`: its first job, read by the server before the fork (read in a new runner, it cost the runner
    ~40 page copies and 0.2-0.3 ms more than it saved the server). Its stdio is /dev/null: the runner
    log is created only if the runner itself fails (its traceback), not for every step."""
    code = 1
    config: RunnerConfig | None = None
    log: str | None = None
    record: int | None = None
    try:
        gc.disable()  # it allocates little; a collection would only copy pages
        os.setsid()  # its own session: a signal to the scheduler's group does not reach it
        # SIGCHLD keeps the server's handler until Wakeups replaces it, before the command starts.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # Nothing else of the server's (its pipes to the scheduler, other runners') stays open here; the
        # pipes kept are close-on-exec, so a command has its stdin, stdout and stderr and nothing else.
        keep = sorted({requests, replies} | ({notices} if notices is not None else set()))
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 65536)
        os.set_blocking(requests, False)
        os.umask(0o077)  # the step's files (staged reads, results, logs) are its tenant's: owner-only
        wakeups = start_runner_process()
        pid = os.getpid()
        fields = proc_stat_fields(pid)
        start_time = fields[19] if fields else ""
        for job in range(1, MAX_JOBS_PER_RUNNER + 1):
            if job == 1:
                config, log = first
            else:
                request = _next_request(requests, wakeups, idle_seconds)
                if request is None:
                    break
                config, log = _read_request(request)
            record = start_job_record(config, start_time, CANCEL_CHECK_SIGNAL, f"{pid}.{job}")
            _write_all(replies, b"%s %d\n" % (start_time.encode(), job))
            # The job's cancel marker is looked at after its status is written: a runner whose job was
            # cancelled takes no other (`cancel` writes the marker before anything else, and kills the
            # runner only if the status was still missing after that: see docs/pipelines.md). Nor does
            # one told to stop by a signal.
            reusable = (
                run_job(config, wakeups, record)
                and not os.path.exists(config.cancel_marker)
                and not wakeups.stop_signals
                and job < MAX_JOBS_PER_RUNNER
            )
            os.close(record)
            config = record = None
            if reusable:  # before the notice: a step submitted once its end is heard finds it idle
                with contextlib.suppress(BrokenPipeError):  # the server has ended: the next read says so
                    _write_all(replies, b"idle\n")
            if notices is not None:
                # Its pid: the submitting process then knows this runner's exit, when it ends while it
                # waits, announces nothing new (`local_exits.py`). One write of a few bytes (under
                # PIPE_BUF) is all or nothing.
                with contextlib.suppress(OSError):  # full (notices are waiting already) or nobody reads
                    os.write(notices, b"%d\n" % pid)
            if not reusable:
                break  # without "idle": the server gives it nothing more
        code = 0
    except BaseException:
        if config is not None:
            record_runner_failure(config, log, record)
    finally:
        os._exit(code)


# --- the server (its own process) -----------------------------------------------------------------


# The environment the submitting process had when it started the server (the first line it sends):
# each request tells the command's environment as its differences from this.
_base_env: dict[str, str] = {}


def _read_request(request: bytes) -> tuple[RunnerConfig, str]:
    document = json.loads(request)
    return RunnerConfig.from_request(document["config"], _base_env), str(document["log"])


@dataclass
class _Runner:
    pid: int
    requests: int  # the write end of its request pipe
    replies: int  # the read end of its reply pipe
    received: bytes = b""

    def read_line(self) -> bytes | None:
        """Its next line (blocking); None if it ended."""
        while b"\n" not in self.received:
            chunk = os.read(self.replies, 4096)
            if not chunk:
                return None
            self.received += chunk
        line, self.received = self.received.split(b"\n", 1)
        return line

    def close(self) -> None:
        """Told to end (its next read of a request finds the pipe closed)."""
        for fd in (self.requests, self.replies):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Runners:
    def __init__(self, notices: int | None, idle_seconds: float, max_idle: int) -> None:
        self.notices = notices
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self.idle: list[_Runner] = []  # the longest waiting first: the last is given the next step
        self.busy: dict[int, _Runner] = {}  # by its reply pipe

    def collect_idle(self) -> None:
        """Busy runners that have said "idle" since join the idle ones; runners that have ended (a busy
        one after its job, an idle one after `idle_seconds`: its reply pipe reads as closed) are
        dropped."""
        if not self.busy and not self.idle:
            return
        ready, _, _ = select.select([*self.busy, *(r.replies for r in self.idle)], [], [], 0)
        # A runner whose "idle" came in the same read as its job's reply (a short step, a server slow to
        # read) has it buffered here already: its pipe then reads as empty.
        ready = [*{*ready, *(fd for fd, r in self.busy.items() if b"\n" in r.received)}]
        if not ready:
            return
        ended = set()
        for fd in ready:
            runner = self.busy.pop(fd, None)
            if runner is None:  # an idle runner writes nothing: it has ended
                ended.add(fd)
            elif runner.read_line() == b"idle":
                self.idle.append(runner)
            else:
                runner.close()
        if ended:
            kept = []
            for runner in self.idle:
                (runner.close() if runner.replies in ended else kept.append(runner))
            self.idle = kept
        while len(self.idle) > self.max_idle:
            self.idle.pop(0).close()

    def fork(self, first: tuple[RunnerConfig, str]) -> _Runner:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _become_runner(requests_read, replies_write, self.notices, first, self.idle_seconds)
        os.close(requests_read)
        os.close(replies_write)
        return _Runner(pid, requests_write, replies_read)

    def start_job(self, request: bytes) -> bytes:
        """Give the step to the runner that became idle last (whichever workset it ran), else to a new
        one; the reply once its job file is written. The job file exists before the command does and
        before the executor hears the runner's pid, so a submission whose command started can always be
        found, whoever dies when."""
        self.collect_idle()
        reply = None
        while reply is None and self.idle:
            runner = self.idle.pop()
            # None: it ended before it read the step or wrote its job file (then it started nothing of
            # it, and another runner's job file takes the place of any it wrote).
            reply = self._ask(runner, request)
        if reply is None:
            runner = self.fork(_read_request(request))
            reply = self._reply(runner)
            if reply is None:
                raise ForkServerError(f"runner {runner.pid} ended before it wrote its job file")
        self.busy[runner.replies] = runner
        start_time, _, job = reply.partition(b" ")
        return b'{"pid": %d, "start_time": "%s", "job": %d}\n' % (runner.pid, start_time, int(job))

    @classmethod
    def _ask(cls, runner: _Runner, request: bytes) -> bytes | None:
        """Give a waiting runner the step: its reply once it has written the job file; None (and
        closed) if it has ended."""
        try:
            _write_all(runner.requests, request)
        except BrokenPipeError:
            runner.close()
            return None
        return cls._reply(runner)

    @staticmethod
    def _reply(runner: _Runner) -> bytes | None:
        """The runner's "<start time> <job number>" once it has written the job file; None (and closed) if it
        ended."""
        reply = runner.read_line()
        start_time, _, job = (reply or b"").partition(b" ")
        if not (start_time.isdigit() and job.isdigit()):
            runner.close()
            return None
        return reply

    def close(self) -> None:
        """Tell every runner to end: a waiting one ends now, and is reaped here before the server ends
        (not left to whoever inherits it); a busy one after its step."""
        self.collect_idle()
        for runner in [*self.idle, *self.busy.values()]:
            runner.close()
        for runner in self.idle:
            with contextlib.suppress(ChildProcessError):  # reaped already (SIGCHLD)
                os.waitpid(runner.pid, 0)


def serve(
    requests: IO[bytes], replies: IO[bytes], notices: int | None = None,
    idle_seconds: float = IDLE_RUNNER_SECONDS, max_idle: int = MAX_IDLE_RUNNERS,
) -> None:  # fmt: skip
    boot_id()  # read once here, inherited by every runner
    first = json.loads(requests.readline() or b"{}").get("env")
    if not isinstance(first, dict):
        raise ForkServerError('the fork server\'s first line must be its environment: {"env": {...}}')
    _base_env.update(first)
    gc.freeze()  # what is loaded now stays shared with the runners (not copied by their collections)
    signal.signal(signal.SIGCHLD, _reap_runners)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the scheduler; we end with our stdin
    if notices is not None:
        os.set_inheritable(notices, False)  # the runners have it; the commands they start do not
    runners = _Runners(notices, idle_seconds, max_idle)
    for line in requests:
        try:  # read here only for a runner forked for it (a waiting runner reads its step itself)
            reply = runners.start_job(line if line.endswith(b"\n") else line + b"\n")
        except Exception as exc:
            reply = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n"
        replies.write(reply)
        replies.flush()
    runners.close()
    _reap_runners()


def main(
    notices: int | None = None, idle_seconds: float = IDLE_RUNNER_SECONDS, max_idle: int = MAX_IDLE_RUNNERS
) -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer, notices, idle_seconds, max_idle)


if __name__ == "__main__":
    main()
