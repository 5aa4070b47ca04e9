"""Reading what Slurm and the batch script say about a job: Slurm's job states, `squeue` and `sacct`
output, slurmstepd's messages in a job's stderr, and the exit file the batch script writes.

Pure functions over text: no command is run here (`slurm_status` asks the cluster and decides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stamen.executors.base import JobResources, JobState

SQUEUE_FIELDS = ("JobID", "State", "Reason", "exit_code", "StartTime", "EndTime")
SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "Start", "End", "ElapsedRaw", "TotalCPU", "MaxRSS")

# Slurm's job states (squeue %T / sacct State, first word) -> stamen's JobState.
SLURM_STATE_MAP: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,  # held after a special exit, waiting to be requeued
    "CONFIGURING": JobState.PENDING,  # nodes allocated, still booting (cloud nodes)
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # the command ended, Slurm is still cleaning up: final state follows
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,  # federation: another cluster runs it
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,  # the job's --deadline passed
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}


def slurm_state_to_job_state(native_state: str) -> JobState | None:
    """`"CANCELLED by 1000"` -> CANCELLED; None for a state this module does not know."""
    words = native_state.split()
    return SLURM_STATE_MAP.get(words[0].rstrip("+")) if words else None


def parse_exit_code(value: str) -> tuple[int | None, int | None]:
    """sacct's ExitCode `"N:S"` -> (exit code, signal); a signal of 0 means none."""
    exit_part, _, signal_part = value.partition(":")
    try:
        exit_code = int(exit_part)
        signal_number = int(signal_part) if signal_part else 0
    except ValueError:
        return None, None
    return exit_code, (signal_number or None)


def decode_wait_status(raw: int) -> tuple[int | None, int | None]:
    """squeue's exit_code is a raw wait status: (exit code, None) or (None, signal)."""
    if raw & 0x7F:
        return None, raw & 0x7F
    return raw >> 8, None


def parse_slurm_duration(value: str) -> float | None:
    """Slurm's `[D-][HH:]MM:SS[.mmm]` (TotalCPU, Elapsed) -> seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", value.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


def parse_slurm_memory_mb(value: str) -> float | None:
    """sacct's MaxRSS (`"1234K"`, `"12.5M"`, `"2G"`, `"0"`) -> MiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)", value.strip())
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2)
    scale = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}
    return number * scale[unit]


def parse_slurm_time(value: str) -> datetime | None:
    """Slurm's local-time `2024-01-31T12:00:00` (or Unknown/None/N/A) -> an aware datetime."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class QueueRecord:
    """One job as `squeue` shows it."""

    job_id: str
    state: str
    reason: str
    raw_exit_status: int | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class AccountingRecord:
    """One job as `sacct` shows it (the job line, plus MaxRSS/TotalCPU from its `.batch` step)."""

    job_id: str
    state: str
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    ended_at: datetime | None
    elapsed_seconds: float | None
    cpu_seconds: float | None
    max_rss_mb: float | None


def parse_squeue_output(text: str) -> dict[str, QueueRecord]:
    records: dict[str, QueueRecord] = {}
    for line in text.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < len(SQUEUE_FIELDS):
            continue
        job_id, state, reason, raw_exit, started, ended = fields[: len(SQUEUE_FIELDS)]
        records[job_id] = QueueRecord(
            job_id=job_id,
            state=state,
            reason=reason,
            raw_exit_status=int(raw_exit) if raw_exit.isdigit() else None,
            started_at=parse_slurm_time(started),
            ended_at=parse_slurm_time(ended),
        )
    return records


def parse_sacct_output(text: str) -> dict[str, AccountingRecord]:
    """`sacct --parsable2 --noheader` lines -> one record per job (steps folded into their job)."""
    jobs: dict[str, dict[str, str]] = {}
    batch_steps: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) != len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, values, strict=True))
        job_id, _, step_name = row["JobIDRaw"].partition(".")
        if not step_name:
            jobs[job_id] = row
        elif step_name == "batch":
            batch_steps[job_id] = row
    records: dict[str, AccountingRecord] = {}
    for job_id, row in jobs.items():
        batch = batch_steps.get(job_id, {})
        exit_code, signal_number = parse_exit_code(row["ExitCode"])
        elapsed = row["ElapsedRaw"]
        records[job_id] = AccountingRecord(
            job_id=job_id,
            state=row["State"],
            exit_code=exit_code,
            signal=signal_number,
            started_at=parse_slurm_time(row["Start"]),
            ended_at=parse_slurm_time(row["End"]),
            elapsed_seconds=float(elapsed) if elapsed.isdigit() else None,
            cpu_seconds=parse_slurm_duration(row["TotalCPU"]),
            max_rss_mb=parse_slurm_memory_mb(batch.get("MaxRSS", "")),
        )
    return records


# What slurmstepd writes into a job's stderr when it ends the job itself.
_SLURMSTEPD_MESSAGES: tuple[tuple[re.Pattern[str], JobState], ...] = (
    (
        re.compile(r"slurmstepd\S*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT"),
        JobState.TIMEOUT,
    ),
    (
        re.compile(r"slurmstepd\S*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO PREEMPTION"),
        JobState.PREEMPTED,
    ),
    (
        re.compile(r"slurmstepd\S*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAIL"),
        JobState.NODE_FAIL,
    ),
    (re.compile(r"slurmstepd\S*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ \*\*\*"), JobState.CANCELLED),
    # jobacct_gather's OverMemoryKill, and the cgroup plugin's OOM notice
    # ("Exceeded job memory limit" at the job level; "Step 19.0 exceeded memory limit (...), being killed"
    # when the step is sampled first, which happens under load; Slurm 20.11 and later print the step as
    # "StepId=24.batch")
    (
        re.compile(
            r"slurmstepd\S*: error: (?:Exceeded (?:job|step) memory limit"
            r"|(?:(?:Step|Job) |StepId=|JobId=)\S+ exceeded memory limit)"
        ),
        JobState.OUT_OF_MEMORY,
    ),
    (re.compile(r"slurmstepd\S*: error: Detected \d+ oom[-_]kill event"), JobState.OUT_OF_MEMORY),
)


def slurmstepd_verdict(stderr_text: str) -> tuple[JobState, str] | None:
    """How slurmstepd says it ended the job (state, its message line), from the job's stderr."""
    for line in reversed(stderr_text.splitlines()):
        for pattern, state in _SLURMSTEPD_MESSAGES:
            if pattern.search(line):
                return state, line.strip()
    return None


def refine_with_slurmstepd(state: JobState, verdict: tuple[JobState, str] | None) -> tuple[JobState, str]:
    """A FAILED job that slurmstepd killed for its memory is OUT_OF_MEMORY (jobacct_gather's OverMemoryKill
    makes it FAILED with signal 9); returns the state and a note for the reason."""
    if state is JobState.FAILED and verdict is not None and verdict[0] is JobState.OUT_OF_MEMORY:
        return JobState.OUT_OF_MEMORY, f"; its stderr says: {verdict[1]}"
    return state, ""


# --- the exit file (written by the batch script, see slurm_commands.render_batch_script) ---------------
def epoch_to_datetime(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def children_cpu_seconds(times_line: object) -> float | None:
    """bash `times` children line, e.g. `"0m1.250s 0m0.031s"` -> user + system seconds."""
    if not isinstance(times_line, str):
        return None
    parts = re.findall(r"(\d+)m(\d+(?:[.,]\d+)?)s", times_line)
    if len(parts) != 2:
        return None
    return sum(int(minutes) * 60 + float(seconds.replace(",", ".")) for minutes, seconds in parts)


def outcome_from_exit_file(document: dict[str, Any]) -> tuple[int | None, int | None, JobResources]:
    """(exit code, signal, resources) from the batch script's exit file."""
    status = int_or_none(document.get("exit_code"))
    exit_code: int | None = status
    signal_number: int | None = None
    if status is not None and 128 < status <= 128 + 64:  # bash: 128 + N when the command died of signal N
        exit_code, signal_number = None, status - 128
    started, ended = document.get("started_at"), document.get("ended_at")
    elapsed = float(ended - started) if isinstance(started, int) and isinstance(ended, int) else None
    resources = JobResources(
        elapsed_seconds=elapsed, cpu_seconds=children_cpu_seconds(document.get("children_cpu_times"))
    )
    return exit_code, signal_number, resources
