"""Starting local runners cheaply: a fork server that has the runner loaded, forks runners and gives
a runner the next step of the workset it has just run a step of.

Starting `python -m stamen.executors.local_runner` for every step costs a Python interpreter start
(~50 ms of CPU, far more than a short step). Instead, each process that submits local steps starts
one small fork server (`python -I -S -c ...local_forkserver import main...`, its child, which imports
only the runner) and asks it over a pipe, one line per step, for a runner (the asking side is
`local_forkserver_client.py`). A runner is a forked child of the server in a session of its own: it
outlives the scheduler and the fork server. It reads a job from its request pipe, writes the job's
file, answers on its reply pipe, runs the step exactly as the standalone runner would, writes its
status, tells the submitting process (a byte on the notice pipe) and says "idle" on its reply pipe.
The server then keeps it for the next step of the same workset, and forks a runner for a step only
when no runner of its workset waits. It answers once the job file is written, reaps runners as they
end (no zombies) and exits when its stdin closes (the submitting process ended); it then closes the
runners' request pipes, so a waiting runner ends at once (reaped here first) and a busy one after its
step.

Why runners are used again: a fresh fork copies every page it writes (~470 per runner for a `true`
step) and pays the fork and the exit of a 13 MB process, ~2-3 ms of CPU per step in all; a runner that
has run a step has those pages already and runs the next for ~0.5-1 ms. Only for the same workset:
a job is known by its runner's pid (the job id), and a workset's next step is submitted only once the
scheduler has recorded the end of the last, so no two of a runner's jobs are ever active together (a
poll answers by job id). At most MAX_IDLE_RUNNERS wait; more end, the longest waiting first.

Requests (server):  "<workset id>\t" + {"config": RunnerConfig.to_json(), "log": "<step>.runner.log"}
Replies (server):   {"pid": <runner pid>, "start_time": "<clock ticks since boot>"} or {"error": "..."}
Runner -> server:   "<start time>\n" once the job file is written, "idle\n" once the job ended
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
from dataclasses import dataclass
from types import FrameType
from typing import IO, NoReturn

from stamen.executors.local_proc import boot_id, proc_stat_fields
from stamen.executors.local_runner import (
    CANCEL_CHECK_SIGNAL,
    Wakeups,
    record_runner_failure,
    run_job,
    start_runner_process,
    write_job_file,
)
from stamen.executors.local_runner_config import RunnerConfig

# What this process imports is what every runner it forks pays for: a forked child runs the
# interpreter's at-fork hooks and copies every page it writes. `threading` (which `subprocess` imports)
# alone adds an at-fork hook that cost each runner ~0.4 ms of CPU (140 more page copies), so the
# client side, which needs both, is a module of its own.

# Runners kept waiting for their workset's next step; more are told to end, the longest waiting first
# (a workset whose last step has run has none). A runner ends after this many jobs.
MAX_IDLE_RUNNERS = 16
MAX_JOBS_PER_RUNNER = 1000


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


def _next_request(requests: int, wakeups: Wakeups) -> bytes | None:
    """The next job's request line; None when the server closed the pipe (it ended, or has idle
    runners enough) or a stop signal came between jobs."""
    line = b""
    while not line.endswith(b"\n"):
        if wakeups.stop_signals_between_jobs:
            return None
        wakeups.wait(None, also=requests)
        try:
            chunk = os.read(requests, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            return None
        line += chunk
    return line


def _become_runner(
    requests: int, replies: int, notices: int | None, first: tuple[RunnerConfig, str]
) -> NoReturn:
    """In the forked child: detach, then for each job the server sends: write its job file, tell the
    server (on `replies`) its start time, run the step, tell the submitting process
    (on `notices`) and the server ("idle"); never return. A runner that fails before a job's file is
    written runs nothing of it (the server sees `replies` closed without a word and answers with an
    error).

    `first`: its first job, read by the server before the fork (read in a new runner, it cost the runner
    ~40 page copies and 0.2-0.3 ms more than it saved the server). Its stdio is /dev/null: the runner
    log is created only if the runner itself fails (its traceback), not for every step."""
    code = 1
    config: RunnerConfig | None = None
    log: str | None = None
    try:
        gc.disable()  # it allocates little; a collection would only copy pages
        os.setsid()  # its own session: a signal to the scheduler's group does not reach it
        # SIGCHLD keeps the server's handler until Wakeups replaces it, before the command starts.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # Nothing else of the server's (its pipes to the scheduler, other runners') stays open here.
        keep = sorted({requests, replies} | ({notices} if notices is not None else set()))
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 65536)
        os.set_blocking(requests, False)
        os.umask(0o077)  # the step's files (staged reads, results, logs) are its tenant's: owner-only
        wakeups = start_runner_process()
        fields = proc_stat_fields(os.getpid())
        start_time = fields[19] if fields else ""
        for job in range(1, MAX_JOBS_PER_RUNNER + 1):
            if job == 1:
                config, log = first
            else:
                request = _next_request(requests, wakeups)
                if request is None:
                    break
                config, log = _read_request(request)
            os.chdir(config.workdir)
            write_job_file(config, cancel_signal=CANCEL_CHECK_SIGNAL)
            _write_all(replies, f"{start_time}\n".encode())
            reusable = run_job(config, wakeups) and not config.last
            config = None
            if notices is not None:
                # Its pid: the submitting process then knows this runner's exit, when it is told it
                # to end while it waits, announces nothing new (`local_exits.py`). One write of a few
                # bytes (under PIPE_BUF) is all or nothing.
                with contextlib.suppress(OSError):  # full (notices are waiting already) or nobody reads
                    os.write(notices, b"%d\n" % os.getpid())
            if not reusable or job == MAX_JOBS_PER_RUNNER:
                break  # without "idle": the server gives it nothing more
            with contextlib.suppress(BrokenPipeError):  # the server has ended: the next read says so
                _write_all(replies, b"idle\n")
        code = 0
    except BaseException:
        if config is not None:
            record_runner_failure(config, log)
    finally:
        os._exit(code)


# --- the server (its own process) -----------------------------------------------------------------


def _read_request(request: bytes) -> tuple[RunnerConfig, str]:
    document = json.loads(request)
    return RunnerConfig.from_json(document["config"]), str(document["log"])


@dataclass
class _Runner:
    pid: int
    requests: int  # the write end of its request pipe
    replies: int  # the read end of its reply pipe
    workset: bytes = b""  # of the step it runs, or ran last
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
    def __init__(self, notices: int | None) -> None:
        self.notices = notices
        self.idle: dict[bytes, _Runner] = {}  # by workset, the longest waiting first
        self.busy: dict[int, _Runner] = {}  # by its reply pipe

    def collect_idle(self) -> None:
        """Busy runners that have said "idle" (or ended) since: waiting for their workset (or gone)."""
        if not self.busy:
            return
        ready, _, _ = select.select(list(self.busy), [], [], 0)
        for fd in ready:
            runner = self.busy.pop(fd)
            if runner.read_line() != b"idle":
                runner.close()
                continue
            if (earlier := self.idle.pop(runner.workset, None)) is not None:
                earlier.close()
            self.idle[runner.workset] = runner
            while len(self.idle) > MAX_IDLE_RUNNERS:
                self.idle.pop(next(iter(self.idle))).close()

    def fork(self, first: tuple[RunnerConfig, str]) -> _Runner:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            _become_runner(requests_read, replies_write, self.notices, first)
        os.close(requests_read)
        os.close(replies_write)
        return _Runner(pid, requests_write, replies_read)

    def start_job(self, workset: bytes, request: bytes) -> bytes:
        """Give the step to the runner waiting for its workset, else to a new one; the reply once its job
        file is written. The job file exists before the command does and before the executor hears the
        runner's pid, so a submission whose command started can always be found, whoever dies when."""
        self.collect_idle()
        runner = self.idle.pop(workset, None)
        reply = self._ask(runner, request) if runner is not None else None
        if runner is None or reply is None:
            # None waits, or it ended before it read the step or wrote its job file (then it started
            # nothing of it, and a new runner's job file takes the place of any it wrote).
            runner = self.fork(_read_request(request))
            reply = self._reply(runner)
            if reply is None:
                raise ForkServerError(f"runner {runner.pid} ended before it wrote its job file")
        runner.workset = workset
        self.busy[runner.replies] = runner
        return b'{"pid": %d, "start_time": "%s"}\n' % (runner.pid, reply)

    @classmethod
    def _ask(cls, runner: _Runner, request: bytes) -> bytes | None:
        """Give a waiting runner the step: its start time once it has written the job file; None (and
        closed) if it has ended."""
        try:
            _write_all(runner.requests, request)
        except BrokenPipeError:
            runner.close()
            return None
        return cls._reply(runner)

    @staticmethod
    def _reply(runner: _Runner) -> bytes | None:
        """The runner's start time once it has written the job file; None (and closed) if it ended."""
        reply = runner.read_line()
        if reply is None or not reply.isdigit():
            runner.close()
            return None
        return reply

    def close(self) -> None:
        """Tell every runner to end: a waiting one ends now, and is reaped here before the server ends
        (not left to whoever inherits it); a busy one after its step."""
        self.collect_idle()
        for runner in [*self.idle.values(), *self.busy.values()]:
            runner.close()
        for runner in self.idle.values():
            with contextlib.suppress(ChildProcessError):  # reaped already (SIGCHLD)
                os.waitpid(runner.pid, 0)


def serve(requests: IO[bytes], replies: IO[bytes], notices: int | None = None) -> None:
    boot_id()  # read once here, inherited by every runner
    gc.freeze()  # what is loaded now stays shared with the runners (not copied by their collections)
    signal.signal(signal.SIGCHLD, _reap_runners)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the scheduler; we end with our stdin
    if notices is not None:
        os.set_inheritable(notices, False)  # the runners have it; the commands they start do not
    runners = _Runners(notices)
    for line in requests:
        try:  # read here only for a runner forked for it (a waiting runner reads its step itself)
            workset, _, request = line.partition(b"\t")
            reply = runners.start_job(workset, request if request.endswith(b"\n") else request + b"\n")
        except Exception as exc:
            reply = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n"
        replies.write(reply)
        replies.flush()
    runners.close()
    _reap_runners()


def main(notices: int | None = None) -> None:
    serve(sys.stdin.buffer, sys.stdout.buffer, notices)


if __name__ == "__main__":
    main()
