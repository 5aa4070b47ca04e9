"""The runner the local executor starts for every step: `python -m stamen.executors.local_runner`.

It is started detached (its own session) and outlives the scheduler process that started it. It:

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

Before it starts the command, the runner writes `<step>.job.json` (given `--job-file`): which
submission it runs (workset, attempt, step, submission time) and who it is (its pid, its start time
in clock ticks since boot, the boot id), so a scheduler that died before storing the job handle can
find the job again and tell it from a recycled pid or an earlier attempt's runner.
While the command runs, `<step>.running.json` records the command's pid/process group so that any
process can find it. The status file is the only record of how the step ended.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

STATUS_VERSION = 1
JOB_FILE_VERSION = 1
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
POLL_INTERVAL_SECONDS = 0.05
MEMORY_SAMPLE_INTERVAL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_COMMAND_NOT_FOUND = 127
EXIT_COMMAND_NOT_EXECUTABLE = 126

STOP_CANCEL = "cancel"
STOP_TIME_LIMIT = "time_limit"
STOP_MEMORY_LIMIT = "memory_limit"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Readers see either no file or the whole document, never a partial write."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None when the process does not exist.

    The command name (field 2) may contain spaces and parentheses, so split after the last ')'.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def boot_id() -> str:
    """This boot's id: a pid and a start time name one process only within one boot."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


def job_document(
    *, workset_id: str, attempt: int, step: str, submitted_at: str, runner_pid: int, runner_start_time: str,
    boot: str,
) -> dict[str, Any]:  # fmt: skip
    """The job file's content. The executor (right after it started the runner) and the runner (as
    it starts) both write it, with the same values, so it exists whichever of them dies first."""
    return {
        "version": JOB_FILE_VERSION,
        "workset_id": workset_id,
        "attempt": attempt,
        "step": step,
        "submitted_at": submitted_at,
        "runner_pid": runner_pid,
        "runner_start_time": runner_start_time,
        "boot_id": boot,
    }


def group_resident_bytes(pgid: int) -> int:
    """Sum of the resident memory of every live process in process group `pgid`."""
    page_size = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat_fields(int(entry.name))
        # fields[0] = state, fields[2] = pgrp, fields[21] = rss in pages (stat fields 3, 5 and 24).
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != pgid:
            continue
        total += int(fields[21]) * page_size
    return total


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _die_with_runner() -> None:
    """In the command (before exec): receive SIGKILL if the runner dies, so a lost job stops too."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class RunnerState:
    """What the runner knows about the command it runs; turned into the status file at the end."""

    argv: list[str]
    time_limit_seconds: float | None
    memory_limit_mb: int | None
    grace_seconds: float
    cancel_marker: Path
    command_pid: int | None = None
    stopped_by: str | None = None
    stop_reason: str = ""
    kill_deadline: float | None = None  # monotonic time at which the command group gets SIGKILL
    peak_group_rss_mb: float = 0.0
    signals_received: list[int] = field(default_factory=list)

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


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stamen.executors.local_runner", description=__doc__)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--status-file", required=True, type=Path)
    parser.add_argument("--running-file", type=Path, help="default: <status file stem>.running.json")
    parser.add_argument("--stdout-file", type=Path, help="default: <step>.stdout.log in the workdir")
    parser.add_argument("--stderr-file", type=Path, help="default: <step>.stderr.log in the workdir")
    parser.add_argument("--cancel-marker", type=Path, help="written by the executor before it cancels")
    parser.add_argument("--time-limit-seconds", type=float)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--grace-seconds", type=float, default=10.0)
    parser.add_argument("--job-file", type=Path, help="written first: which submission this runner runs")
    parser.add_argument("--workset-id", help="with --job-file: the submission's workset")
    parser.add_argument("--attempt", type=int, help="with --job-file: the submission's attempt")
    parser.add_argument("--step", help="with --job-file: the submission's step")
    parser.add_argument("--submitted-at", help="with --job-file: the submission's time (ISO 8601)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- argv...")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given after --")
    if args.job_file is not None:
        missing = [f"--{name.replace('_', '-')}" for name in ("workset_id", "attempt", "step", "submitted_at")
                   if getattr(args, name) is None]  # fmt: skip
        if missing:
            parser.error(f"--job-file also needs {', '.join(missing)}: they say which submission this is")
    return args


def _write_job_file(args: argparse.Namespace) -> None:
    """Before anything else: from here on, a runner of this submission can be found."""
    fields = proc_stat_fields(os.getpid())
    write_json_atomically(
        args.job_file,
        job_document(
            workset_id=args.workset_id, attempt=args.attempt, step=args.step, submitted_at=args.submitted_at,
            runner_pid=os.getpid(), runner_start_time=fields[19] if fields else "", boot=boot_id(),
        ),
    )  # fmt: skip


def step_file_stem(status_file: Path) -> str:
    name = status_file.name
    return name.removesuffix(".status.json") if name.endswith(".status.json") else status_file.stem


def _install_stop_handlers(state: RunnerState) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        state.signals_received.append(signum)
        if state.cancel_marker.exists():
            reason = "cancelled by stamen"
        else:
            reason = f"cancelled: the runner received {signal.Signals(signum).name} from outside stamen"
        state.request_stop(STOP_CANCEL, reason, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)


def _reap_children(command_pid: int) -> tuple[bool, int | None]:
    """Reap every finished child (the command and orphans re-parented to us); the command's wait status."""
    command_status: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True, command_status
        if pid == 0:
            return False, command_status
        if pid == command_pid:
            command_status = status


def _kill_leftovers_and_reap(pgid: int, deadline_seconds: float = 5.0) -> None:
    """The command has ended: kill what is left of its group and reap every descendant we inherited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(POLL_INTERVAL_SECONDS)


def _supervise(state: RunnerState, started_monotonic: float) -> int:
    """Wait for the command while enforcing the limits; returns its wait status."""
    assert state.command_pid is not None
    next_memory_sample = 0.0
    while True:
        _, command_status = _reap_children(state.command_pid)
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
        time.sleep(POLL_INTERVAL_SECONDS)


def _describe_signal(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run(argv: Sequence[str]) -> int:
    args = _parse_args(argv)
    workdir: Path = args.workdir
    status_file: Path = args.status_file
    stem = step_file_stem(status_file)
    running_file: Path = args.running_file or status_file.with_name(f"{stem}.running.json")
    stdout_file: Path = args.stdout_file or workdir / f"{stem}.stdout.log"
    stderr_file: Path = args.stderr_file or workdir / f"{stem}.stderr.log"
    cancel_marker: Path = args.cancel_marker or status_file.with_name(f"{stem}.cancel")
    workdir.mkdir(parents=True, exist_ok=True)
    if args.job_file is not None:
        _write_job_file(args)

    state = RunnerState(
        argv=list(args.command),
        time_limit_seconds=args.time_limit_seconds,
        memory_limit_mb=args.memory_limit_mb,
        grace_seconds=args.grace_seconds,
        cancel_marker=cancel_marker,
    )
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _install_stop_handlers(state)
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
        "stdout_file": str(stdout_file),
        "stderr_file": str(stderr_file),
    }
    with stdout_file.open("wb") as out, stderr_file.open("wb") as err:
        try:
            command = subprocess.Popen(
                state.argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                process_group=0,
                preexec_fn=_die_with_runner,
            )
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError)
            document["exit_code"] = EXIT_COMMAND_NOT_FOUND if missing else EXIT_COMMAND_NOT_EXECUTABLE
            document["reason"] = f"the command could not be started: {exc}"
            err.write(f"stamen local runner: {document['reason']}\n".encode())
            document["ended_at"] = _now()
            document["elapsed_seconds"] = time.monotonic() - started_monotonic
            write_json_atomically(status_file, document)
            return 0
    state.command_pid = command.pid
    fields = proc_stat_fields(command.pid)
    write_json_atomically(
        running_file,
        {
            "runner_pid": os.getpid(),
            "command_pid": command.pid,
            "command_pgid": command.pid,
            "command_start_time": fields[19] if fields else "",
            "started_at": started_at,
        },
    )
    # A cancel that arrived before the command existed: apply it now.
    if state.signals_received or cancel_marker.exists():
        state.request_stop(STOP_CANCEL, "cancelled by stamen before the command started", signal.SIGTERM)

    wait_status = _supervise(state, started_monotonic)
    state.command_pid = None  # a cancel arriving from now on is too late: the command has ended
    command.returncode = 0  # reaped by us with waitpid: keep Popen from waiting for it again
    _kill_leftovers_and_reap(command.pid)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    document["ended_at"] = _now()
    document["elapsed_seconds"] = round(time.monotonic() - started_monotonic, 3)
    document["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    document["max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports ru_maxrss in KiB
    document["peak_group_rss_mb"] = round(state.peak_group_rss_mb, 1) if state.memory_limit_mb else None
    document["command_pid"] = command.pid
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
    write_json_atomically(status_file, document)
    with contextlib.suppress(FileNotFoundError):
        running_file.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(arguments)
    except SystemExit:
        raise
    except BaseException:
        # The runner itself failed: leave a status that says so rather than a silent LOST.
        traceback.print_exc()
        with contextlib.suppress(Exception):
            args = _parse_args(arguments)
            write_json_atomically(
                args.status_file,
                {
                    "version": STATUS_VERSION,
                    "argv": list(args.command),
                    "exit_code": None,
                    "signal": None,
                    "stopped_by": None,
                    "ended_at": _now(),
                    "written_by": "runner",
                    "reason": f"the stamen local runner failed: {traceback.format_exc(limit=3)}",
                },
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
