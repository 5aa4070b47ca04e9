"""The `local` executor: every step is a subprocess on this machine.

`submit` has the step run by a runner (`local_runner.py`) of this process's fork server
(`local_forkserver.py`): a detached process in a session of its own that survives the scheduler,
starts the step's command in its own process group and, once the step has ended, may run another
step, of any workset. Everything another process needs to find the job again is in the `JobHandle`
(job id "<runner pid>.<its job number>", the runner's start time from /proc/<pid>/stat, the boot id)
and in the step's files in its workdir (`local_files.py`).

`poll` reads those files (the job file first: a runner of the fork server appends the command's start
and the step's status to it); it never waits for a child and starts no process. `find` reads the job
file: a runner of this attempt of this step was started if and only if it names that attempt. A
subscriber of `on_job_exit` (the scheduler's loop) is called as soon as a runner has finished a job (the
fork server's notice pipe) or has exited (a pidfd, `local_exits.py`: a killed runner, or one of an
earlier scheduler adopted after a restart), so the end of a step is noticed when it happens, not at
the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobResources, JobState, JobStatus
from stamen.executors.local_exits import ExitWatcher
from stamen.executors.local_files import (
    STOP_CANCEL,
    STOP_MEMORY_LIMIT,
    STOP_TIME_LIMIT,
    JobRecord,
    StepFiles,
    append_to_job_record,
    read_job_record,
    read_json,
    tail,
    write_json_atomically,
)
from stamen.executors.local_forkserver_client import fork_server
from stamen.executors.local_proc import boot_id, group_is_alive, proc_stat_fields, process_is_alive
from stamen.executors.local_runner import CANCEL_CHECK_SIGNAL
from stamen.executors.local_runner_config import RunnerConfig, Submission, command_path

__all__ = ["LOST_REASON", "LocalExecutor", "group_is_alive", "process_is_alive", "runner_pid"]

KIND = "local"
LOST_REASON = "the runner process disappeared without writing its status (machine restart or kill -9)"
_FILE_NAMES = tuple(StepFiles.__dataclass_fields__)
_STOPPED_STATES = {STOP_CANCEL: JobState.CANCELLED, STOP_TIME_LIMIT: JobState.TIMEOUT,
                   STOP_MEMORY_LIMIT: JobState.OUT_OF_MEMORY}  # fmt: skip


def _parse_time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _has_status(files: dict[str, str]) -> bool:
    """The runner (or `cancel`) has recorded how the job ended (a read of a local file: not awaited)."""
    record = read_job_record(files["job_file"])
    if record is not None and record.status is not None:
        return True
    return os.path.exists(files["status_file"])


def _running(files: dict[str, str], record: JobRecord | None) -> dict[str, Any] | None:
    """What the runner recorded of the command it started: in the job record, else (a standalone or
    earlier runner's job) in the running file."""
    if record is not None and record.appended:
        return record.running
    return read_json(files["running_file"])


def runner_pid(handle: JobHandle) -> int:
    """The pid of the runner that runs the job: its id is "<runner pid>.<job number>" (the pid alone for
    a runner of one job: the standalone runner's, or one of before runners took any workset's steps)."""
    return int(handle.job_id.partition(".")[0])


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class LocalExecutor:
    """Runs steps as subprocesses here. Stateless between calls: any instance can poll/cancel any job."""

    kind = KIND

    def __init__(
        self, cluster: str = "local", grace_seconds: float = 10.0, python: str = sys.executable
    ) -> None:
        self.cluster = cluster
        self.grace_seconds = grace_seconds
        self.python = python
        self._exits = ExitWatcher(fork_server(python).all_announced)

    def on_job_exit(self, callback: Callable[[], None]) -> None:
        """Call `callback` (in the event loop) whenever a runner this instance submitted or polled ends."""
        self._exits.subscribe(callback)

    def _watch(self, handle: JobHandle) -> None:
        self._exits.watch(runner_pid(handle), handle.extra.get("runner_start_time", ""))

    @staticmethod
    def _step_files(workdir: str, step: str) -> dict[str, str]:
        return StepFiles.of(workdir, step).as_dict()

    # --- submit ------------------------------------------------------------------------------
    async def submit(self, step: StepSpec) -> JobHandle:
        """The step may be given to a runner that has run others (of any workset): its job id names the
        runner and the job's number among the runner's."""
        if self._exits.subscribed:  # before the job is given: its runner's notices are counted
            fork_server(self.python).on_job_end(self._exits.notify)
        handle = await asyncio.to_thread(self._submit, step)
        self._watch(handle)
        return handle

    def _submit(self, step: StepSpec) -> JobHandle:
        workdir = str(Path(step.workdir))
        try:
            os.mkdir(workdir, 0o700)
            created = True
        except FileNotFoundError:
            os.makedirs(workdir, 0o700, exist_ok=True)
            created = True
        except FileExistsError:
            created = False
        os.chmod(workdir, 0o700)  # one tenant's workset: no other user of the machine reads it
        files = self._step_files(workdir, step.step)
        if not created:  # an earlier run's files (a workdir made just now has none to look up)
            for stale in ("status_file", "running_file", "cancel_marker", "job_file", "runner_log"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(files[stale])
        submitted_at = datetime.now(UTC)
        # The command inherits this process's environment as it is at submission, as a child started
        # now would, with the step's variables (the fork server is told the variables; it knows the rest).
        env = {**step.env, "STAMEN_WORKSET_ID": step.workset_id, "STAMEN_ATTEMPT": str(step.attempt),
               "STAMEN_STEP": step.step, "STAMEN_CPUS": str(step.cpus)}  # fmt: skip
        # A step with a PATH of its own has its command looked up here rather than in the runner (which
        # pays for every page it touches after its fork; on the runner's own PATH the C library looks,
        # in the runner). A relative PATH entry would be found from here, not the workdir: left to the runner.
        executable = None
        if step.argv and (os.sep in step.argv[0] or "PATH" in step.env):
            executable = command_path(step.argv[0], env)
            if executable is not None and os.sep not in step.argv[0] and not os.path.isabs(executable):
                executable = None
        config = RunnerConfig(
            argv=list(step.argv), workdir=workdir, status_file=files["status_file"],
            running_file=files["running_file"], stdout_file=files["stdout_file"],
            stderr_file=files["stderr_file"], cancel_marker=files["cancel_marker"], job_file=files["job_file"],
            submission=Submission(step.workset_id, step.attempt, step.step, submitted_at.isoformat()),
            time_limit_seconds=step.time_limit_seconds, memory_limit_mb=step.memory_mb,
            grace_seconds=self.grace_seconds, env=env, executable=executable,
        )  # fmt: skip
        runner = fork_server(self.python).start_runner(config, files["runner_log"])
        # The runner has written the job file (how `find` knows this submission) before this returns.
        boot = boot_id()
        return self._handle(
            step, workdir, files, runner.job_id, runner.start_time, boot, submitted_at, CANCEL_CHECK_SIGNAL
        )

    def _handle(
        self, step: StepSpec, workdir: str, files: dict[str, str], job_id: str, runner_start_time: str,
        boot: str, submitted_at: datetime, cancel_signal: int | None,
    ) -> JobHandle:  # fmt: skip
        # `cancel_signal`: what has the runner look at the job's cancel marker; None: a runner that runs
        # one job only (standalone, or of an earlier version), stopped by SIGTERM.
        cancel = {} if cancel_signal is None else {"runner_cancel_signal": str(int(cancel_signal))}
        return JobHandle(
            executor=KIND,
            cluster=self.cluster,
            job_id=job_id,
            workset_id=step.workset_id,
            attempt=step.attempt,
            step=step.step,
            workdir=workdir,
            submitted_at=submitted_at,
            extra={"runner_start_time": runner_start_time, "boot_id": boot,
                   **cancel, **files},
        )  # fmt: skip

    # --- find --------------------------------------------------------------------------------
    async def find(self, step: StepSpec) -> JobHandle | None:
        return await asyncio.to_thread(self._find, step)

    def _find(self, step: StepSpec) -> JobHandle | None:
        workdir = str(Path(step.workdir))
        files = self._step_files(workdir, step.step)
        job_file = files["job_file"]
        record = read_job_record(job_file)
        if record is None:
            return None  # no runner was ever started for this step in this workdir (or `submit` removed it)
        document = record.job
        if (document.get("workset_id"), document.get("attempt"), document.get("step")) != (
            step.workset_id, step.attempt, step.step,
        ):  # fmt: skip
            return None  # an earlier attempt's runner: the workdir is kept across attempts
        pid, start_time = document.get("runner_pid"), document.get("runner_start_time")
        boot, submitted_at = document.get("boot_id"), _parse_time(document.get("submitted_at"))
        if not (
            isinstance(pid, int) and isinstance(start_time, str) and isinstance(boot, str) and submitted_at
        ):
            # It names this submission but not its runner: "cannot tell", never "not found".
            raise ValueError(
                f"job file {job_file} names workset {step.workset_id} attempt {step.attempt} step "
                f"{step.step} but not a valid runner_pid/runner_start_time/boot_id/submitted_at: {document}"
            )
        # Returned whether the runner still runs or not: poll tells (a recycled pid has another start
        # time, so it is never taken for the runner; a runner gone without a status is LOST).
        cancel_signal = document.get("cancel_signal")
        cancel_signal = cancel_signal if isinstance(cancel_signal, int) else None
        job_id = document.get("job_id")
        job_id = job_id if isinstance(job_id, str) and job_id.startswith(f"{pid}.") else str(pid)
        return self._handle(step, workdir, files, job_id, start_time, boot, submitted_at, cancel_signal)

    # --- poll --------------------------------------------------------------------------------
    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        statuses = await asyncio.to_thread(self._poll_all, list(handles))
        for handle in handles:  # jobs adopted from an earlier scheduler are watched from here on
            status = statuses.get(handle.job_id)
            if status is not None and not status.state.finished:
                self._watch(handle)
        return statuses

    def _poll_all(self, handles: list[JobHandle]) -> dict[str, JobStatus]:
        return {handle.job_id: self._status(handle) for handle in handles}

    def _files(self, handle: JobHandle) -> dict[str, str]:
        extra = handle.extra
        if all(name in extra for name in _FILE_NAMES):  # every handle this executor made
            return {name: str(extra[name]) for name in _FILE_NAMES}
        defaults = self._step_files(handle.workdir, handle.step)
        return {name: str(extra.get(name, path)) for name, path in defaults.items()}

    def _runner_alive(self, handle: JobHandle) -> bool:
        return process_is_alive(
            runner_pid(handle), handle.extra.get("runner_start_time", ""), handle.extra.get("boot_id", "")
        )

    def _status(self, handle: JobHandle) -> JobStatus:
        files = self._files(handle)
        # Liveness first, then the files: the runner records its status before it exits, so a runner
        # seen dead here has either recorded it already or never will.
        alive = self._runner_alive(handle)
        record = read_job_record(files["job_file"])
        if record is not None and record.appended:
            document = record.status
            if document is None and not alive:  # a runner that could not append its failure: its file
                document = read_json(files["status_file"])
        else:  # a standalone runner's job, or one of before job records
            document = read_json(files["status_file"])
        if document is not None:
            return self._finished_status(handle, document, files)
        if alive:
            running = _running(files, record)
            started_at = _parse_time(running.get("started_at")) if running else None
            state = JobState.RUNNING if running else JobState.PENDING
            return JobStatus(handle=handle, state=state, native_state=state.value, started_at=started_at)
        self._kill_orphaned_command(files, record)
        runner_output = tail(files["runner_log"], 20)
        reason = LOST_REASON + (f"; runner output: {runner_output}" if runner_output else "")
        return JobStatus(
            handle=handle, state=JobState.LOST, native_state="lost", reason=reason,
            log_tail=self._logtail(files),
        )  # fmt: skip

    @staticmethod
    def _kill_orphaned_command(files: dict[str, str], record: JobRecord | None = None) -> None:
        """A lost job must not keep running behind the scheduler's back (a retry may start)."""
        LocalExecutor._signal_command_group(files, signal.SIGKILL, record)

    @staticmethod
    def _signal_command_group(files: dict[str, str], signum: int, record: JobRecord | None = None) -> None:
        """Signal the job's command group while it is still the job's: its leader is the process the
        runner started (same start time), or the leader has gone but members of the group remain (a
        group id is not reused while it has members). Never a group that took the number since.
        `record`: the job file as read just now (None: read here)."""
        running = _running(files, record or read_job_record(files["job_file"]))
        if not running or not isinstance(running.get("command_pgid"), int):
            return
        pgid = int(running["command_pgid"])
        leader_start = str(running.get("command_start_time", ""))
        leader = proc_stat_fields(pgid)
        if (leader is not None and leader[19] == leader_start) or (leader is None and group_is_alive(pgid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signum)

    @staticmethod
    def _logtail(files: dict[str, str]) -> str:
        parts = []
        for label in ("stderr", "stdout"):
            text = tail(files[f"{label}_file"])
            if text:
                parts.append(f"--- {label} (last lines) ---\n{text}")
        return "\n".join(parts)

    def _finished_status(
        self, handle: JobHandle, document: dict[str, Any], files: dict[str, str]
    ) -> JobStatus:
        exit_code = document.get("exit_code")
        signal_number = document.get("signal")
        stopped_by = document.get("stopped_by")
        reason = str(document.get("reason", ""))
        if isinstance(stopped_by, str) and stopped_by in _STOPPED_STATES:
            state = _STOPPED_STATES[stopped_by]
            native = stopped_by
        elif exit_code == 0:
            state, native = JobState.SUCCEEDED, "exit 0"
        elif isinstance(signal_number, int):
            state, native = JobState.FAILED, f"signal {signal_number}"
        else:
            state = JobState.FAILED
            native = f"exit {exit_code}" if exit_code is not None else "runner error"
            reason = reason or "the step failed without an exit code"
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            signal=signal_number if isinstance(signal_number, int) else None,
            native_state=native,
            started_at=_parse_time(document.get("started_at")),
            ended_at=_parse_time(document.get("ended_at")),
            resources=JobResources(
                elapsed_seconds=_float_or_none(document.get("elapsed_seconds")),
                cpu_seconds=_float_or_none(document.get("cpu_seconds")),
                max_rss_mb=_float_or_none(document.get("max_rss_mb")),
            ),
            log_tail=self._logtail(files),
            reason="" if state is JobState.SUCCEEDED else reason,
        )

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, handle: JobHandle) -> None:
        files = self._files(handle)
        if _has_status(files):
            return  # already finished: nothing to stop
        if not self._runner_alive(handle):
            # Lost (no status, no runner): nothing to signal but a command the runner may have left.
            await asyncio.to_thread(self._kill_orphaned_command, files)
            return
        await asyncio.to_thread(self._signal_job, handle, files, signal.SIGTERM, True)
        deadline = time.monotonic() + self.grace_seconds + 2.0  # the runner escalates after the grace
        while time.monotonic() < deadline:
            if _has_status(files):
                return
            if not self._runner_alive(handle):
                break
            await asyncio.sleep(0.05)
        # The runner did not finish in time (hung, or it was gone already): kill everything ourselves.
        # The status still missing now, after the cancel marker was written: the runner still runs this
        # job, or has finished it since and will take no other (it looks at the job's marker after
        # writing the status, and ends if it is there). So this SIGKILL reaches no other job's runner.
        if _has_status(files):
            return
        await asyncio.to_thread(self._signal_job, handle, files, signal.SIGKILL, False)
        if not _has_status(files):
            await asyncio.to_thread(self._write_cancelled_status, handle, files)

    def _signal_job(self, handle: JobHandle, files: dict[str, str], signum: int, mark: bool) -> None:
        if mark:
            write_json_atomically(files["cancel_marker"], {"requested_at": datetime.now(UTC).isoformat(),
                                                           "requested_by_pid": os.getpid()})  # fmt: skip
        # Runner first, so it knows about the cancel before it sees its command die. A runner that may
        # run another step after this one (of any workset) is not sent SIGTERM (it would stop whatever
        # step it runs when this comes, perhaps another workset's by now) but its cancel signal: "look
        # at your job's cancel marker".
        cancel_signal = handle.extra.get("runner_cancel_signal", "")
        signum_for_runner = (
            int(cancel_signal) if signum == signal.SIGTERM and cancel_signal.isdigit() else signum
        )
        self._signal_runner(handle, signum_for_runner)
        self._signal_command_group(files, signum)

    def _signal_runner(self, handle: JobHandle, signum: int) -> None:
        """Signal the job's runner through a pidfd opened before its identity is checked: a runner that
        ends in between cannot have its pid reused by another process that would get the signal."""
        try:
            pidfd = os.pidfd_open(runner_pid(handle))
        except OSError:
            return  # gone
        try:
            if self._runner_alive(handle):
                signal.pidfd_send_signal(pidfd, signum)
        except (ProcessLookupError, PermissionError):
            pass
        finally:
            os.close(pidfd)

    @staticmethod
    def _write_cancelled_status(handle: JobHandle, files: dict[str, str]) -> None:
        record = read_job_record(files["job_file"])
        running = _running(files, record) or {}
        status = {
            "version": 1,
            "exit_code": None,
            "signal": signal.SIGKILL,
            "stopped_by": STOP_CANCEL,
            "started_at": running.get("started_at"),
            "ended_at": datetime.now(UTC).isoformat(),
            "written_by": "executor",
            "reason": "cancelled by stamen; the runner did not stop in time and was killed with SIGKILL",
        }
        if record is not None and record.appended:  # after the runner's, if it wrote one since: not read
            fd = os.open(files["job_file"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                append_to_job_record(fd, "status", status, durable=True)
            finally:
                os.close(fd)
        else:
            write_json_atomically(files["status_file"], status)
