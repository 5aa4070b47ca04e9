"""The files of one local step in its workdir: the only record of a local job that outlives a process.

<step>.job.json      the job's record, one JSON document a line. The first line says which submission
                     runs here (workset, attempt, step) and its runner (pid, start time, boot id): the
                     file appears with it whole (written to a temporary, renamed), before the command
                     may start and before `submit` returns. A runner of the fork server then appends
                     `{"running": ...}` (the command's pid / process group) once the command has
                     started and `{"status": ...}` (the outcome) once the step has ended: a line counts
                     once its newline is there, the first status line is the outcome. (Version 1, the
                     standalone runner's: the first line only, the other two in files of their own.)
<step>.status.json   version 1 only: the outcome, written atomically when the step has ended (it
                     takes the running file's place: that file is renamed and overwritten)
<step>.running.json  version 1 only: the command's pid / process group while it runs
<step>.cancel        written by `cancel` before it signals, so the runner knows who stopped it
<step>.stdout.log    the command's stdout
<step>.stderr.log    the command's stderr
<step>.runner.log    the runner's own traceback, written only if the runner itself fails

Why one file for the job, its command and its outcome: creating a file is the dearest thing a step's
files cost (on an ext4 without a journal, up to ~0.25 ms of CPU each, see docs/pipelines.md), and
appending a line to a file already open costs one write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # not loaded at run time: the fork server imports this, and each runner pays for its size
    from pathlib import Path

STATUS_VERSION = 1
# 1: the job file holds the job's line only (its running and status files apart); 2: a job record (the
# running and status lines appended to it).
JOB_FILE_VERSION = 1
JOB_RECORD_VERSION = 2

# How a step was stopped (the status file's `stopped_by`), when stamen stopped it.
STOP_CANCEL = "cancel"
STOP_TIME_LIMIT = "time_limit"
STOP_MEMORY_LIMIT = "memory_limit"

# One encoder made at import (json.dumps with options makes one per call): forked runners share it.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)

LOG_TAIL_LINES = 50
LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class StepFiles:
    """The paths, as strings: the executor reads them for every job it polls, and pathlib objects cost
    several times the reads themselves."""

    status_file: str
    running_file: str
    cancel_marker: str
    stdout_file: str
    stderr_file: str
    runner_log: str
    job_file: str

    @classmethod
    def of(cls, workdir: Path | str, step: str) -> StepFiles:
        w = os.fspath(workdir)
        return cls(
            status_file=os.path.join(w, f"{step}.status.json"),
            running_file=os.path.join(w, f"{step}.running.json"),
            cancel_marker=os.path.join(w, f"{step}.cancel"),
            stdout_file=os.path.join(w, f"{step}.stdout.log"),
            stderr_file=os.path.join(w, f"{step}.stderr.log"),
            runner_log=os.path.join(w, f"{step}.runner.log"),
            job_file=os.path.join(w, f"{step}.job.json"),
        )

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def step_file_stem(status_file: Path) -> str:
    name = status_file.name
    return name.removesuffix(".status.json") if name.endswith(".status.json") else status_file.stem


def write_json_atomically(
    path: str | Path, document: dict[str, Any], *, durable: bool = True, recycle: str | Path | None = None
) -> None:
    """Readers see either no file or the whole document, never a partial write. `durable` also
    fsyncs it, so it survives the machine, not only the processes.

    `recycle`: a file this one replaces (the runner's running file, replaced by the status file),
    renamed to the temporary name and overwritten, so that no file is created: on ext4 creating a
    file costs ~0.15 ms of CPU, renaming and overwriting one a fifth of that. It is gone afterwards."""
    folder, name = os.path.split(path)  # os.path, not pathlib: this runs in forked runners
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    data = _ENCODER.encode(document).encode()
    try:
        if recycle is None:
            raise FileNotFoundError
        os.rename(recycle, temporary)
        # Overwritten, then cut to length: not O_TRUNC, for ext4 writes a file out when it is closed
        # after being truncated to nothing (its guard for replace-by-truncate), a disk write per step.
        fd = os.open(temporary, os.O_WRONLY | os.O_CLOEXEC)
        recycled = True
    except FileNotFoundError:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        recycled = False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if recycled:
            os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of the file's last LOG_TAIL_BYTES ("" if it is empty or missing). Read
    for every step that ends (its stdout and stderr): an open, a stat, a read, no file object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, LOG_TAIL_BYTES, max(0, size - LOG_TAIL_BYTES)) if size else b""
    except OSError:
        return ""
    finally:
        os.close(fd)
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:]) if data else ""


def job_document(
    *, workset_id: str, attempt: int, step: str, submitted_at: str, runner_pid: int, runner_start_time: str,
    boot: str, cancel_signal: int | None = None, job_id: str | None = None, version: int = JOB_FILE_VERSION,
) -> dict[str, Any]:  # fmt: skip
    """The job file's first line, written before the runner may start the command and before the fork
    server tells the executor the runner's pid, so it exists as soon as `submit` returns."""
    return {
        "version": version,
        "workset_id": workset_id,
        "attempt": attempt,
        "step": step,
        "submitted_at": submitted_at,
        "runner_pid": runner_pid,
        "runner_start_time": runner_start_time,
        "boot_id": boot,
        # The signal that has the runner look at this job's cancel marker, for a runner that may run
        # another step after this one (absent: one that runs one job, told by SIGTERM).
        **({"cancel_signal": cancel_signal} if cancel_signal is not None else {}),
        # "<runner pid>.<its job number>": a runner of the fork server runs one job after another, of
        # any workset (absent: the runner's only job, a standalone runner's; its id is the pid).
        **({"job_id": job_id} if job_id is not None else {}),
    }


class JobRecord(NamedTuple):
    """A job file as read: its first line (the job), and for a job record (version 2) the first running
    and status lines appended to it (None: not there, or not whole yet)."""

    job: dict[str, Any]
    running: dict[str, Any] | None
    status: dict[str, Any] | None

    @property
    def appended(self) -> bool:
        """The runner appends the command's start and the outcome here (else: to files of their own)."""
        return self.job.get("version") == JOB_RECORD_VERSION


def read_job_record(path: str | Path) -> JobRecord | None:
    """None if there is no job file (or its first line is not a JSON object)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = chunk = os.read(fd, 1 << 16)
        while len(chunk) == 1 << 16:  # a shorter read of a local file is its end: no read for nothing
            chunk = os.read(fd, 1 << 16)
            data += chunk
    finally:
        os.close(fd)
    # The first line appeared whole (renamed into place; version 1's has no newline). An appended line
    # counts once its newline is there: a reader can find the end of one still being written.
    first, newline, rest = data.partition(b"\n")
    try:
        job = json.loads(first)
    except ValueError:
        return None
    if not isinstance(job, dict):
        return None
    running = status = None
    if newline and rest:
        for line in rest.split(b"\n")[:-1]:  # the last piece has no newline: not whole, or empty
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if running is None and isinstance(entry.get("running"), dict):
                running = entry["running"]
            elif status is None and isinstance(entry.get("status"), dict):
                status = entry["status"]
    return JobRecord(job, running, status)


def create_job_record(path: str, job: dict[str, Any]) -> int:
    """Write the job file's first line (a temporary renamed into place: it is never seen in part) and
    return the file, open for appending the job's other lines (`append_to_job_record`)."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, _ENCODER.encode(job).encode() + b"\n")
        os.rename(temporary, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def append_to_job_record(fd: int, kind: str, document: dict[str, Any], *, durable: bool = False) -> None:
    """Append `{kind: document}` as one line (O_APPEND: after whatever another process appended)."""
    _write_all(fd, _ENCODER.encode({kind: document}).encode() + b"\n")
    if durable:
        os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
