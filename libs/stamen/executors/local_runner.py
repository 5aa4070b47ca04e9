"""A local step's runner: a small detached process that runs the step's command and records how it
ended. The local executor forks it from its fork server (`local_forkserver.py`), where it then runs
other steps, of any workset (`start_runner_process` once, `run_job` per step); it can also be started on
its own for one step, `python -m stamen.executors.local_runner --workdir W --status-file F -- argv…`.

It runs in a session of its own and outlives the scheduler that asked for it. It:

- starts the step's command as its child, in a new process group (the *command group*), with stdout
  and stderr streamed to files in the workdir;
- enforces the time limit (SIGTERM to the command group, then SIGKILL after the grace period);
- enforces the memory limit by sampling the resident memory (RSS) of every process of the command
  group and killing the group (SIGKILL) when the sum exceeds the limit, so the reason is clear
  ("out of memory") rather than an allocation failure deep inside the command;
- on SIGTERM/SIGINT/SIGHUP (a cancel) forwards SIGTERM to the command group, escalates to SIGKILL
  after the grace period and records `stopped_by: "cancel"`;
- when the command ends, kills whatever is left of its group, reaps every descendant (the runner is a
  child subreaper) and writes the status file atomically (temporary file + rename).

It sleeps until something happens: a child ending (SIGCHLD), a signal, or the next deadline (time
limit, grace period, memory sample); a step without limits costs no CPU while it runs.

Before it starts the command, the runner writes `<step>.job.json` (when it knows its submission): which
submission it runs (workset, attempt, step, submission time) and who it is (its pid, its start time in
clock ticks since boot, the boot id), so a scheduler that died before storing the job handle can find
the job again and tell it from a recycled pid or an earlier attempt's runner. A runner of the fork
server then appends to that file the command's pid/process group once it has started (so that any
process can find it) and, at the end, the step's status, the only record of how it ended
(`local_files.py`); the standalone runner writes them to `<step>.running.json` and `<step>.status.json`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from stamen.executors.local_files import (
    JOB_RECORD_VERSION,
    STATUS_VERSION,
    STOP_CANCEL,
    STOP_MEMORY_LIMIT,
    STOP_TIME_LIMIT,
    append_to_job_record,
    create_job_record,
    job_document,
    write_json_atomically,
)
from stamen.executors.local_proc import boot_id, group_resident_bytes, proc_stat_fields
from stamen.executors.local_runner_config import RunnerConfig, command_path, parse_runner_args

MEMORY_SAMPLE_INTERVAL_SECONDS = 0.2
LEFTOVER_REAP_SECONDS = 5.0
PR_SET_CHILD_SUBREAPER = 36
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Sent by `cancel`: "look at the cancel marker of the job you run". Harmless when it comes late (the
# runner has gone on to another step, perhaps another workset's, or waits for one), which a SIGTERM to
# a runner that runs one job after another would not be: it would cancel whatever job it runs then.
CANCEL_CHECK_SIGNAL = signal.SIGUSR1

__all__ = [
    "boot_id",
    "main",
    "run_job",
    "run_runner",
    "start_job_record",
    "start_runner_process",
    "write_job_file",
]


def _now() -> str:
    return datetime.now(UTC).isoformat()


# Looked up once, at import: the fork server's runners inherit the function (ctypes looks a name up
# on first use and keeps it; in a runner that would be one lookup, and its page copies, per step).
_LIBC_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


# signal.signal without its Python wrapper, which turns the handler it replaces into an enum member:
# in a forked runner that enum code cost ~0.25 ms of CPU (60 page copies) for its four handlers.
_set_handler: Callable[[int, Callable[[int, FrameType | None], None]], object] = importlib.import_module(
    "_signal"
).signal


def _prctl(option: int, value: int) -> None:
    if _LIBC_PRCTL(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


@dataclass
class RunnerState:
    """What the runner knows about the command it runs; turned into the status file at the end."""

    argv: list[str]
    time_limit_seconds: float | None
    memory_limit_mb: int | None
    grace_seconds: float
    cancel_marker: str
    command_pid: int | None = None
    stopped_by: str | None = None
    stop_reason: str = ""
    kill_deadline: float | None = None  # monotonic time at which the command group gets SIGKILL
    peak_group_rss_mb: float = 0.0
    signals_received: list[int] = field(default_factory=list)
    # Of the children reaped for this job (the command, and its orphans we inherited): not
    # getrusage(RUSAGE_CHILDREN), which a runner that runs one job after another adds up over all of them.
    children_cpu_seconds: float = 0.0
    children_max_rss_kb: int = 0

    def reaped(self, usage: resource.struct_rusage) -> None:
        self.children_cpu_seconds += usage.ru_utime + usage.ru_stime
        self.children_max_rss_kb = max(self.children_max_rss_kb, usage.ru_maxrss)

    def request_stop(self, stopped_by: str, reason: str, first_signal: int) -> None:
        """Stop the command group once: the first cause wins (a cancel after a timeout stays a timeout)."""
        if self.stopped_by is not None or self.command_pid is None:
            return
        self.stopped_by = stopped_by
        self.stop_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.command_pid, first_signal)
        if first_signal == signal.SIGKILL:
            self.kill_deadline = None
        else:
            self.kill_deadline = time.monotonic() + self.grace_seconds


def write_job_file(config: RunnerConfig, cancel_signal: int | None = None, job_id: str | None = None) -> str:
    """Before the command may start: from here on, a runner of this submission can be found. Returns
    this runner's start time (clock ticks since boot), which the job file names it by.

    Not fsynced: it has to outlive the scheduler's process, which the page cache ensures, and the
    executor waits for it before `submit` returns (an fsync would hold up every dispatch by a disk
    flush). After a machine crash no runner is left to find, which the boot id in it tells."""
    assert config.job_file is not None and config.submission is not None
    fields = proc_stat_fields(os.getpid())
    start_time = fields[19] if fields else ""
    s = config.submission
    write_json_atomically(
        config.job_file,
        job_document(
            workset_id=s.workset_id, attempt=s.attempt, step=s.step, submitted_at=s.submitted_at,
            runner_pid=os.getpid(), runner_start_time=start_time, boot=boot_id(), cancel_signal=cancel_signal,
            job_id=job_id,
        ),
        durable=False,
    )  # fmt: skip
    return start_time


def start_job_record(config: RunnerConfig, start_time: str, cancel_signal: int, job_id: str) -> int:
    """A runner of the fork server, before the command may start: the job file (version 2, a job record,
    see `write_job_file` for why it is not fsynced), open for `run_job` to append the command's start
    and the step's status to. `start_time`: this runner's (read once per runner)."""
    assert config.job_file is not None and config.submission is not None
    s = config.submission
    return create_job_record(
        config.job_file,
        job_document(
            workset_id=s.workset_id, attempt=s.attempt, step=s.step, submitted_at=s.submitted_at,
            runner_pid=os.getpid(), runner_start_time=start_time, boot=boot_id(), cancel_signal=cancel_signal,
            job_id=job_id, version=JOB_RECORD_VERSION,
        ),
    )  # fmt: skip


def _record_running(config: RunnerConfig, record: int | None, running: dict[str, Any]) -> None:
    # Not fsynced: only read while both live; a machine crash ends the command too.
    if record is not None:
        append_to_job_record(record, "running", running)
    else:
        write_json_atomically(config.running_file, running, durable=False)


def _record_status(config: RunnerConfig, record: int | None, status: dict[str, Any]) -> None:
    # Not fsynced (see the end of `_run_job`). The standalone runner's running file, stale once the
    # command has ended, becomes its status file: no file is created for it.
    if record is not None:
        append_to_job_record(record, "status", status)
    else:
        write_json_atomically(config.status_file, status, durable=False, recycle=config.running_file)


class Wakeups:
    """The runner's one place to sleep: a pipe that the C signal handler writes to for every signal
    (`signal.set_wakeup_fd`), so SIGCHLD, a cancel and a deadline all end the same wait, and a signal
    arriving just before the wait is not missed. Made once per runner process; `state` is the job it
    runs (None between jobs)."""

    def __init__(self) -> None:
        self.state: RunnerState | None = None
        # SIGTERM/SIGINT/SIGHUP received, during a job (which it cancels) or between jobs: the runner was
        # told to stop, and takes no other job.
        self.stop_signals: list[int] = []
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        # Handled: it only has to wake us.
        _set_handler(signal.SIGCHLD, lambda _signum, _frame: None)

        def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
            self.stop_signals.append(signum)
            state = self.state
            if state is None:
                return  # no job to stop: the runner ends
            state.signals_received.append(signum)
            if os.path.exists(state.cancel_marker):
                reason = "cancelled by stamen"
            else:
                reason = f"cancelled: the runner received {signal.Signals(signum).name} from outside stamen"
            state.request_stop(STOP_CANCEL, reason, signal.SIGTERM)

        def on_cancel_check(_signum: int, _frame: FrameType | None) -> None:
            state = self.state
            if state is not None and os.path.exists(state.cancel_marker):
                state.signals_received.append(CANCEL_CHECK_SIGNAL)
                state.request_stop(STOP_CANCEL, "cancelled by stamen", signal.SIGTERM)

        for signum in STOP_SIGNALS:
            _set_handler(signum, on_stop_signal)
        _set_handler(CANCEL_CHECK_SIGNAL, on_cancel_check)

    def wait(self, timeout: float | None, also: int | None = None) -> None:
        """Until a signal, `timeout` seconds, or (if given) until fd `also` is readable."""
        select.select([self._read] if also is None else [self._read, also], [], [],
                      None if timeout is None else max(0.0, timeout))  # fmt: skip
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass


def _reap_children(state: RunnerState, command_pid: int) -> int | None:
    """Reap every finished child (the command and orphans re-parented to us); the command's wait status."""
    command_status: int | None = None
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return command_status
        if pid == 0:
            return command_status
        state.reaped(usage)
        if pid == command_pid:
            command_status = status


def _kill_leftovers_and_reap(state: RunnerState, pgid: int, wakeups: Wakeups) -> bool:
    """The command has ended: kill what is left of its group and reap every descendant we inherited.
    False if some are still there after LEFTOVER_REAP_SECONDS (this runner then takes no other job)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + LEFTOVER_REAP_SECONDS
    while (now := time.monotonic()) < deadline:
        try:
            pid, _, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            wakeups.wait(deadline - now)
        else:
            state.reaped(usage)
    return False


def _supervise(state: RunnerState, started_monotonic: float, wakeups: Wakeups) -> int:
    """Wait for the command while enforcing the limits; returns its wait status."""
    assert state.command_pid is not None
    next_memory_sample = 0.0
    while True:
        command_status = _reap_children(state, state.command_pid)
        if command_status is not None:
            return command_status
        now = time.monotonic()
        if state.kill_deadline is not None and now >= state.kill_deadline:
            state.kill_deadline = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.command_pid, signal.SIGKILL)
        if state.time_limit_seconds is not None and now - started_monotonic > state.time_limit_seconds:
            state.request_stop(
                STOP_TIME_LIMIT,
                f"time limit reached: the step ran longer than its limit of {state.time_limit_seconds:g}s",
                signal.SIGTERM,
            )
        if state.memory_limit_mb is not None and now >= next_memory_sample:
            next_memory_sample = now + MEMORY_SAMPLE_INTERVAL_SECONDS
            rss_mb = group_resident_bytes(state.command_pid) / (1024 * 1024)
            state.peak_group_rss_mb = max(state.peak_group_rss_mb, rss_mb)
            if rss_mb > state.memory_limit_mb:
                state.request_stop(
                    STOP_MEMORY_LIMIT,
                    f"out of memory: the step's processes used {rss_mb:.0f} MB of resident memory, "
                    f"above its limit of {state.memory_limit_mb} MB",
                    signal.SIGKILL,
                )
        deadlines = [state.kill_deadline]
        if state.time_limit_seconds is not None and state.stopped_by is None:
            # Just past the limit, so the check above sees it exceeded.
            deadlines.append(started_monotonic + state.time_limit_seconds + 0.001)
        if state.memory_limit_mb is not None:
            deadlines.append(next_memory_sample)
        due = [d for d in deadlines if d is not None]
        wakeups.wait(min(due) - time.monotonic() if due else None)


def _describe_signal(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _spawn_command(config: RunnerConfig) -> int:
    """Start the command in a new process group, in the workdir, stdout/stderr to their files; its pid.

    posix_spawn (vfork + exec, no copy of this process) rather than fork: the cheapest way to start a
    process from Python. The executable is looked up on the PATH of the step's environment, as
    subprocess would (by the submitting process, unless it left that to us); the signals the runner
    handles or Python ignores are reset for the command."""
    spawn = os.posix_spawn
    executable = config.executable
    if executable is None and config.env.get("PATH") == os.environ.get("PATH"):
        # Found by the C library on this process's PATH, the step's own (relative entries from the
        # workdir, as `command_path` would): no Python (and no module load in a fresh runner) for it.
        spawn, executable = os.posix_spawnp, config.argv[0]
    if executable is None:
        executable = command_path(config.argv[0], config.env)
    if executable is None:
        raise FileNotFoundError(2, "No such file or directory", config.argv[0])
    out = os.open(config.stdout_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    err = os.open(config.stderr_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        return spawn(
            executable,
            config.argv,
            config.env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ],
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, *STOP_SIGNALS),
            setsigmask=(),
        )
    finally:
        os.close(out)
        os.close(err)


def start_runner_process() -> Wakeups:
    """Once per runner process, before its first job: a child subreaper (the command's orphans are
    ours to reap), its signal handlers."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return Wakeups()


def run_runner(config: RunnerConfig) -> int:
    """Run the step's command to its end and write its status file, in a runner process of its own (the
    standalone runner). Returns the runner's exit code. The job file is written before this is called."""
    run_job(config, start_runner_process())
    return 0


def run_job(config: RunnerConfig, wakeups: Wakeups, record: int | None = None) -> bool:
    """Run one step's command to its end and record its status. True if this runner may run another
    job (every process the command left has been reaped). Its job file is written before; `record`: that
    file open for appending (`start_job_record`), where the command's start and the status go (None: to
    the running and status files)."""
    state = RunnerState(
        argv=list(config.argv),
        time_limit_seconds=config.time_limit_seconds,
        memory_limit_mb=config.memory_limit_mb,
        grace_seconds=config.grace_seconds,
        cancel_marker=config.cancel_marker,
    )
    os.chdir(config.workdir)  # the command's working directory, where relative paths in argv point
    wakeups.state = state
    try:
        return _run_job(config, state, wakeups, record)
    finally:
        wakeups.state = None


def _run_job(config: RunnerConfig, state: RunnerState, wakeups: Wakeups, record: int | None) -> bool:
    started_at = _now()
    started_monotonic = time.monotonic()
    document: dict[str, Any] = {
        "version": STATUS_VERSION,
        "argv": state.argv,
        "runner_pid": os.getpid(),
        "started_at": started_at,
        "exit_code": None,
        "signal": None,
        "stopped_by": None,
        "reason": "",
        "written_by": "runner",
        "stdout_file": config.stdout_file,
        "stderr_file": config.stderr_file,
    }
    try:
        command_pid = _spawn_command(config)
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        document["exit_code"] = EXIT_COMMAND_NOT_FOUND if missing else EXIT_COMMAND_NOT_EXECUTABLE
        document["reason"] = f"the command could not be started: {exc}"
        with open(config.stderr_file, "ab") as err:
            err.write(f"stamen local runner: {document['reason']}\n".encode())
        document["ended_at"] = _now()
        document["elapsed_seconds"] = time.monotonic() - started_monotonic
        _record_status(config, record, document)
        return True
    state.command_pid = command_pid
    fields = proc_stat_fields(command_pid)
    _record_running(
        config,
        record,
        {
            "runner_pid": os.getpid(),
            "command_pid": command_pid,
            "command_pgid": command_pid,
            "command_start_time": fields[19] if fields else "",
            "started_at": started_at,
        },
    )
    # A cancel that arrived before the command existed: apply it now.
    if state.signals_received or os.path.exists(config.cancel_marker):
        state.request_stop(STOP_CANCEL, "cancelled by stamen before the command started", signal.SIGTERM)

    wait_status = _supervise(state, started_monotonic, wakeups)
    state.command_pid = None  # a cancel arriving from now on is too late: the command has ended
    all_reaped = _kill_leftovers_and_reap(state, command_pid, wakeups)
    document["ended_at"] = _now()
    document["elapsed_seconds"] = round(time.monotonic() - started_monotonic, 3)
    document["cpu_seconds"] = round(state.children_cpu_seconds, 6)  # a `true` takes well under 1 ms
    document["max_rss_mb"] = round(state.children_max_rss_kb / 1024, 1)  # Linux: ru_maxrss in KiB
    document["peak_group_rss_mb"] = round(state.peak_group_rss_mb, 1) if state.memory_limit_mb else None
    document["command_pid"] = command_pid
    if os.WIFSIGNALED(wait_status):
        document["signal"] = os.WTERMSIG(wait_status)
    else:
        document["exit_code"] = os.waitstatus_to_exitcode(wait_status)
    document["stopped_by"] = state.stopped_by
    if state.stopped_by is not None:
        document["reason"] = state.stop_reason
    elif document["signal"] is not None:
        document["reason"] = (
            f"the command was killed by {_describe_signal(document['signal'])} "
            f"(signal {document['signal']}) from outside stamen"
        )
    elif document["exit_code"] != 0:
        document["reason"] = f"the command exited with code {document['exit_code']}"
    # Not fsynced: the status has to outlive the runner and the scheduler's process, which the page
    # cache ensures. After a machine crash a status lost with the cache leaves the job LOST (runner
    # gone, no status), as it does every step that was running at the crash; a durable
    # status would vouch for outputs the command wrote that were not flushed either. (The fsync cost
    # each step ~0.2 ms of CPU and a disk flush before the end was known.)
    _record_status(config, record, document)
    return all_reaped


def record_runner_failure(config: RunnerConfig, log: str | None = None, record: int | None = None) -> None:
    """The runner itself failed: its traceback to `log` (else stderr), and a status that says so rather
    than a silent LOST (appended to the job record `record` if given and it can be, else the status
    file, which `poll` also reads for a job whose runner has gone without a status in its record)."""
    import traceback

    with contextlib.suppress(Exception):
        if log is None:
            traceback.print_exc()
        else:
            with open(log, "w", encoding="utf-8") as out:
                traceback.print_exc(file=out)
    status = {
        "version": STATUS_VERSION,
        "argv": list(config.argv),
        "exit_code": None,
        "signal": None,
        "stopped_by": None,
        "ended_at": _now(),
        "written_by": "runner",
        "reason": f"the stamen local runner failed: {traceback.format_exc(limit=3)}",
    }
    if record is not None:
        with contextlib.suppress(Exception):
            append_to_job_record(record, "status", status)
            return
    with contextlib.suppress(Exception):
        write_json_atomically(config.status_file, status)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_runner_args(list(sys.argv[1:] if argv is None else argv), description=__doc__)
    os.umask(0o077)  # what the step writes is its tenant's: owner-only (the command inherits this)
    try:
        os.makedirs(config.workdir, 0o700, exist_ok=True)
        if config.job_file is not None:
            write_job_file(config)
        return run_runner(config)
    except BaseException:
        record_runner_failure(config)
        return 1


if __name__ == "__main__":
    sys.exit(main())
