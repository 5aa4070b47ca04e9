"""The `slurm` executor: every step is a Slurm batch job.

`submit` writes a bash batch script into the step's workdir and submits it with `sbatch --parsable`.
`poll` asks the cluster about all handles at once: ONE `squeue` call (the controller's view: pending,
running and recently ended jobs) and ONE `sacct` call (the accounting database: the final state, the
exit code and the resources used). `cancel` runs `scancel`. `find` looks a step submission up by its
job name (`stamen:<workset>:a<attempt>:<step>`, unique per attempt): ONE `squeue --name`, then
`sacct --name` (when accounting is on), then the exit file; what cannot be asked raises, since "cannot
tell" must never read as "not found". sbatch runs under `timeout -s KILL`, so it cannot outlive the
executor's command timeout even when the process that started it has died. All commands go through a
`CommandRunner`, so the same executor drives a local cluster or a remote head node over SSH.

The batch script writes the step's own outcome into the workdir when the command ends (also when
Slurm signals it), so a job is never taken as succeeded just because Slurm has forgotten it:

    <step>.slurm.sh      the batch script
    <step>.stdout.log    the command's stdout (sbatch --output)
    <step>.stderr.log    the command's stderr (sbatch --error)
    <step>.exit.json     written atomically by the batch script when the command has ended (with
                         the job id, the workset, the attempt and the step)
    <step>.cancel        written by `cancel` before it runs scancel, so poll knows stamen stopped it

Sources, in order of trust: a finished state in sacct, then a finished state in squeue (the
controller keeps ended jobs for MinJobAge seconds), then the exit file, then slurmstepd's own
message in the job's stderr ("CANCELLED ... DUE TO TIME LIMIT", "Exceeded job memory limit"), then
the cancel marker. A job that none of them knows is LOST. The workdir must be on a file system that
the compute nodes and the runner share. docs/executors-slurm.md has the details.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stamen.executors.base import JobHandle, JobResources, JobState, JobStatus, StepSpec
from stamen.executors.remote import CommandResult, CommandRunner, CommandRunnerError, LocalCommandRunner

KIND = "slurm"
LOG_TAIL_LINES = 50
LOG_TAIL_BYTES = 64 * 1024
SQUEUE_FIELDS = ("JobID", "State", "Reason", "exit_code", "StartTime", "EndTime")
SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "Start", "End", "ElapsedRaw", "TotalCPU", "MaxRSS")
# `sacct --name` without a start time only shows jobs since midnight: look back this far instead (a
# scheduler finds its orphaned submissions at its next pass, so days are plenty).
FIND_ACCOUNTING_LOOKBACK = "now-30days"
# What sacct says (exit 1) on a cluster without accounting (AccountingStorageType=accounting_storage/none):
# the one sacct failure that means "no record" rather than "cannot tell" (slurmdbd down, ...).
ACCOUNTING_DISABLED_MESSAGE = "accounting storage is disabled"
# sbatch runs as `timeout -s KILL <command timeout - this> sbatch ...` on the head node: the bound holds
# even when the process that started it (and enforces the command timeout) has died, which the
# scheduler's wait before resubmitting a `submitting` step relies on.
SBATCH_KILL_MARGIN_SECONDS = 5
# When `timeout -s KILL` fires, it kills its process group, itself included: a parent sees signal 9
# (-9 from a local subprocess or an SSH channel that exec'd it) or 128 + 9 from a shell. A shell's or
# timeout's status when the command cannot be run (126) or is not found (127).
_KILLED_BY_TIMEOUT = (137, -9)
_NOT_RUNNABLE = (126, 127)
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:+-]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# CommandRunnerError codes -> SlurmCommandError codes (SSH_* codes are passed on as they are).
_RUNNER_ERROR_CODES = {
    "COMMAND_NOT_RUNNABLE": "SLURM_COMMAND_MISSING",
    "COMMAND_TIMEOUT": "SLURM_UNREACHABLE",
}

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


class SlurmCommandError(Exception):
    """A Slurm command failed: `code` says which kind of failure, `stderr` is what Slurm said."""

    def __init__(self, code: str, message: str, *, argv: Sequence[str] = (), returncode: int | None = None,
                 stderr: str = "") -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


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
    # when the step is sampled first, which happens under load)
    (
        re.compile(
            r"slurmstepd\S*: error: (?:Exceeded (?:job|step) memory limit|(?:Step|Job) \S+ exceeded memory limit)"
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


@dataclass(frozen=True)
class JobLogs:
    tail: str  # last lines of stderr, then of stdout, with headers
    slurmstepd_verdict: tuple[JobState, str] | None


def _refine_with_slurmstepd(state: JobState, verdict: tuple[JobState, str] | None) -> tuple[JobState, str]:
    """A FAILED job that slurmstepd killed for its memory is OUT_OF_MEMORY (jobacct_gather's OverMemoryKill
    makes it FAILED with signal 9); returns the state and a note for the reason."""
    if state is JobState.FAILED and verdict is not None and verdict[0] is JobState.OUT_OF_MEMORY:
        return JobState.OUT_OF_MEMORY, f"; its stderr says: {verdict[1]}"
    return state, ""


def _epoch_to_datetime(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def _children_cpu_seconds(times_line: object) -> float | None:
    """bash `times` children line, e.g. `"0m1.250s 0m0.031s"` -> user + system seconds."""
    if not isinstance(times_line, str):
        return None
    parts = re.findall(r"(\d+)m(\d+(?:[.,]\d+)?)s", times_line)
    if len(parts) != 2:
        return None
    return sum(int(minutes) * 60 + float(seconds.replace(",", ".")) for minutes, seconds in parts)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_name(step: StepSpec) -> str:
    """`stamen:<workset>:a<attempt>:<step>`, safe for squeue/sacct output: one name per submission of
    a step (a retry is a new attempt, so a new name), which is how `find` recognises the job."""
    return job_name_for(step.workset_id, step.attempt, step.step)


def job_name_for(workset_id: str, attempt: int, step: str) -> str:
    return _JOB_NAME_UNSAFE.sub("_", f"stamen:{workset_id}:a{attempt}:{step}")


@dataclass(frozen=True)
class Submission:
    """A job found by its name: its id and when it was submitted."""

    job_id: str
    submitted_at: datetime


def parse_submissions(text: str) -> list[Submission]:
    """`<job id>|<submit time>` lines (squeue `%A|%V`, sacct `JobIDRaw,Submit`); job steps are skipped."""
    found = []
    for line in text.splitlines():
        job_id, _, submitted = line.strip().partition("|")
        submitted_at = parse_slurm_time(submitted.strip().strip("|"))
        if job_id.isdigit() and submitted_at is not None:
            found.append(Submission(job_id, submitted_at))
    return found


def latest_submission(found: Sequence[Submission]) -> Submission | None:
    """The most recent of several jobs with one name (only a resubmission outside stamen makes more)."""
    return max(found, key=lambda s: (s.submitted_at, int(s.job_id)), default=None)


def exit_file_identity(step: StepSpec) -> dict[str, str | int]:
    """What the exit file says about the submission it belongs to (the workdir outlives attempts)."""
    return {"workset_id": step.workset_id, "attempt": step.attempt, "step": step.step}


def time_limit_minutes(seconds: int) -> int:
    """Slurm time limits have minute granularity: round up, at least one minute."""
    return max(1, math.ceil(seconds / 60))


def render_batch_script(step: StepSpec, exit_file: str) -> str:
    """The batch script: the step's environment, its command, then its exit status into `exit_file`."""
    exports = {**step.env, "STAMEN_WORKSET_ID": step.workset_id, "STAMEN_ATTEMPT": str(step.attempt),
               "STAMEN_STEP": step.step, "STAMEN_CPUS": str(step.cpus)}  # fmt: skip
    export_lines = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in exports.items())
    quoted_exit_file = shlex.quote(exit_file)
    # JSON members, passed to printf as an argument (never in its format: no % is interpreted).
    identity = shlex.quote(json.dumps(exit_file_identity(step))[1:-1])
    return f"""#!/bin/bash
# Written by stamen's Slurm executor: workset {step.workset_id}, attempt {step.attempt}, step {step.step}.
# The sbatch options are on sbatch's command line. At the end this script writes the command's exit
# status to {exit_file}, the source of truth when Slurm has no accounting record of the job.
stamen_exit_file={quoted_exit_file}
stamen_identity={identity}
stamen_received_signal=null
trap 'stamen_received_signal=1' HUP
trap 'stamen_received_signal=2' INT
trap 'stamen_received_signal=15' TERM
stamen_started_at=$(date +%s)
{export_lines}
{shlex.join(step.argv)} </dev/null
stamen_exit_code=$?
stamen_ended_at=$(date +%s)
times > "$stamen_exit_file.times"  # not in a subshell: it must see this shell's children
{{ read -r _; read -r stamen_children_cpu; }} < "$stamen_exit_file.times"
rm -f "$stamen_exit_file.times"
printf '{{"job_id": "%s", "exit_code": %d, "received_signal": %s, "started_at": %s, "ended_at": %s, \
"children_cpu_times": "%s", %s}}\\n' "${{SLURM_JOB_ID:-}}" "$stamen_exit_code" "$stamen_received_signal" \\
  "$stamen_started_at" "$stamen_ended_at" "$stamen_children_cpu" "$stamen_identity" > "$stamen_exit_file.tmp" \\
  && mv -f "$stamen_exit_file.tmp" "$stamen_exit_file"
exit "$stamen_exit_code"
"""


class SlurmExecutor:
    """Runs steps as Slurm batch jobs. Stateless between calls: any instance can poll/cancel any job."""

    kind = KIND

    def __init__(
        self,
        cluster: str = "slurm",
        runner: CommandRunner | None = None,
        *,
        partition: str | None = None,
        account: str | None = None,
        extra_sbatch_args: Sequence[str] = (),
        command_timeout_seconds: float = 60.0,
    ) -> None:
        if command_timeout_seconds < SBATCH_KILL_MARGIN_SECONDS + 1:
            raise ValueError(
                f"command_timeout_seconds={command_timeout_seconds:g} is too short: sbatch is killed "
                f"{SBATCH_KILL_MARGIN_SECONDS} s before it, so it must be at least {SBATCH_KILL_MARGIN_SECONDS + 1} s"
            )
        self.cluster = cluster
        self.runner: CommandRunner = runner if runner is not None else LocalCommandRunner()
        self.partition = partition
        self.account = account
        self.extra_sbatch_args = list(extra_sbatch_args)
        self.command_timeout_seconds = command_timeout_seconds

    # --- files -------------------------------------------------------------------------------
    @staticmethod
    def step_files(workdir: str, step: str) -> dict[str, str]:
        base = workdir.rstrip("/") or "/"
        return {
            "batch_script": f"{base}/{step}.slurm.sh",
            "stdout_file": f"{base}/{step}.stdout.log",
            "stderr_file": f"{base}/{step}.stderr.log",
            "exit_file": f"{base}/{step}.exit.json",
            "cancel_marker": f"{base}/{step}.cancel",
        }

    def _files(self, handle: JobHandle) -> dict[str, str]:
        defaults = self.step_files(handle.workdir, handle.step)
        return {name: handle.extra.get(name, path) for name, path in defaults.items()}

    # --- commands ----------------------------------------------------------------------------
    async def _run(self, argv: Sequence[str], *, label: str | None = None) -> CommandResult:
        """Run a Slurm command; a command that cannot be run at all raises SlurmCommandError."""
        try:
            return await self.runner.run(argv, timeout=self.command_timeout_seconds)
        except CommandRunnerError as error:
            raise SlurmCommandError(
                _RUNNER_ERROR_CODES.get(error.code, error.code),
                f"{label or argv[0]} on {self.runner.description}: {error}",
                argv=argv,
            ) from error

    # --- submit ------------------------------------------------------------------------------
    def sbatch_argv(self, step: StepSpec, files: dict[str, str]) -> list[str]:
        argv = ["sbatch", "--parsable", f"--job-name={job_name(step)}", f"--chdir={step.workdir}",
                f"--output={files['stdout_file']}", f"--error={files['stderr_file']}", "--nodes=1",
                "--ntasks=1", f"--cpus-per-task={step.cpus}", "--export=ALL", "--no-requeue"]  # fmt: skip
        if step.memory_mb is not None:
            argv.append(f"--mem={step.memory_mb}M")
        if step.time_limit_seconds is not None:
            argv.append(f"--time={time_limit_minutes(step.time_limit_seconds)}")
        if self.partition:
            argv.append(f"--partition={self.partition}")
        if self.account:
            argv.append(f"--account={self.account}")
        return [*argv, *self.extra_sbatch_args, files["batch_script"]]

    @property
    def sbatch_kill_after_seconds(self) -> int:
        """How long sbatch may run on the head node before `timeout` kills it (below the command timeout)."""
        return max(1, math.floor(self.command_timeout_seconds) - SBATCH_KILL_MARGIN_SECONDS)

    def submit_argv(self, step: StepSpec, files: dict[str, str]) -> list[str]:
        """What submit runs: sbatch under coreutils `timeout -s KILL`. The runner's own timeout is kept by
        this process (or its SSH channel): if this process dies, an sbatch in its retry loop (slurmctld
        unreachable) would go on and could submit the job long after the scheduler decided to resubmit.
        `timeout` runs beside sbatch on the head node, so the bound holds without us."""
        return ["timeout", "-s", "KILL", str(self.sbatch_kill_after_seconds), *self.sbatch_argv(step, files)]

    async def submit(self, step: StepSpec) -> JobHandle:
        invalid_names = [name for name in step.env if not _ENV_NAME.fullmatch(name)]
        if invalid_names:
            raise ValueError(f"step {step.step}: not valid environment variable names: {invalid_names}")
        files = self.step_files(step.workdir, step.step)
        try:
            await self.runner.make_dirs(step.workdir)
            for stale in ("exit_file", "cancel_marker"):  # from an earlier run in this workdir
                await self.runner.remove_file(files[stale])
            await self.runner.write_file(
                files["batch_script"], render_batch_script(step, files["exit_file"]), executable=True
            )
        except (OSError, CommandRunnerError) as error:
            raise SlurmCommandError(
                "SLURM_WORKDIR_FAILED", f"cannot prepare workdir {step.workdir} on {self.runner.description}: "
                f"{error}",
            ) from error  # fmt: skip
        argv = self.submit_argv(step, files)
        submitted_at = datetime.now(UTC)
        result = await self._run(
            argv, label=f"sbatch (under timeout -s KILL {self.sbatch_kill_after_seconds})"
        )
        job_id = result.stdout.strip().split(";")[0]  # --parsable: "<id>" or "<id>;<cluster>"
        if result.returncode in _KILLED_BY_TIMEOUT:
            raise SlurmCommandError(
                "SLURM_UNREACHABLE",
                f"sbatch for {job_name(step)} did not finish within {self.sbatch_kill_after_seconds} s on "
                f"{self.runner.description} and was killed (timeout -s KILL): the job may or may not have "
                f"been submitted; find() tells which",
                argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        if result.returncode in _NOT_RUNNABLE:
            raise SlurmCommandError(
                "SLURM_COMMAND_MISSING",
                f"cannot run sbatch (under timeout) on {self.runner.description}: both `timeout` "
                f"(coreutils) and `sbatch` must be on its PATH: {result.stderr.strip()}",
                argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        if not result.succeeded or not job_id.isdigit():
            raise SlurmCommandError(
                "SLURM_SUBMIT_FAILED",
                f"sbatch failed for {job_name(step)} (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}",
                argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return self._handle(step, job_id, submitted_at)

    def _handle(self, step: StepSpec, job_id: str, submitted_at: datetime) -> JobHandle:
        extra = self.step_files(step.workdir, step.step)
        if step.time_limit_seconds is not None:
            extra["time_limit_minutes"] = str(time_limit_minutes(step.time_limit_seconds))
        return JobHandle(
            executor=KIND,
            cluster=self.cluster,
            job_id=job_id,
            workset_id=step.workset_id,
            attempt=step.attempt,
            step=step.step,
            workdir=step.workdir,
            submitted_at=submitted_at,
            extra=extra,
        )

    # --- find --------------------------------------------------------------------------------
    async def find(self, step: StepSpec) -> JobHandle | None:
        """The job named `job_name(step)`: squeue (every pending or running job, and ended ones for
        MinJobAge seconds), else sacct (when accounting is on), else this attempt's exit file. squeue
        failing, sacct failing for another reason than "accounting storage is disabled", or the exit
        file existing but not being readable raise SlurmCommandError: the scheduler resubmits the step
        on None, so "cannot tell" must never read as "not found"."""
        name = job_name(step)
        found = await self._find_in_queue(name) or await self._find_in_accounting(name)
        if found is None:
            found = await self._find_by_exit_file(step)
        return self._handle(step, found.job_id, found.submitted_at) if found else None

    async def _find_in_queue(self, name: str) -> Submission | None:
        # --all: also partitions hidden from this user; %A is the job id, %V its submit time.
        argv = ["squeue", "--noheader", "--all", "--states=all", f"--name={name}", "--format=%A|%V"]
        result = await self._run(argv)
        if not result.succeeded:
            raise SlurmCommandError(
                "SLURM_QUERY_FAILED", f"squeue --name={name} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}", argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return latest_submission(parse_submissions(result.stdout))

    async def _find_in_accounting(self, name: str) -> Submission | None:
        argv = ["sacct", "--noheader", "--parsable2", f"--name={name}",
                f"--starttime={FIND_ACCOUNTING_LOOKBACK}", "--format=JobIDRaw,Submit"]  # fmt: skip
        result = await self._run(argv)
        if not result.succeeded:
            if ACCOUNTING_DISABLED_MESSAGE in result.stderr.lower():
                # Slurm itself says there is no accounting: no record, not "cannot tell". squeue has
                # answered already, so what is left to find is an ended job, in its exit file.
                return None
            # slurmdbd down or unreachable, a database error, ...: a job that ended more than
            # MinJobAge ago may be recorded there, so "no record" cannot be told.
            raise SlurmCommandError(
                "SLURM_QUERY_FAILED", f"sacct --name={name} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}", argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return latest_submission(parse_submissions(result.stdout))

    async def _find_by_exit_file(self, step: StepSpec) -> Submission | None:
        """An ended job that Slurm has forgotten: its exit file, if it is this attempt's."""
        exit_file = self.step_files(step.workdir, step.step)["exit_file"]
        try:
            # Not _read_tail (poll's, which takes any read error for "no file"): only a file that does
            # not exist is "no exit file"; any other failure (SSH down, permissions, I/O) is "cannot tell".
            raw = await self.runner.read_file_tail(exit_file, LOG_TAIL_BYTES)
        except CommandRunnerError as error:
            code = _RUNNER_ERROR_CODES.get(error.code, error.code)
            raise SlurmCommandError(
                "SLURM_EXIT_FILE_UNREADABLE" if code == "SSH_FILE_OPERATION_FAILED" else code,
                f"cannot read exit file {exit_file} on {self.runner.description}: {error}",
            ) from error
        except OSError as error:
            raise SlurmCommandError(
                "SLURM_EXIT_FILE_UNREADABLE",
                f"cannot read exit file {exit_file} on {self.runner.description}: {error}",
            ) from error
        try:
            document = json.loads(raw.decode(errors="replace")) if raw else None
        except json.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        if any(document.get(key) != value for key, value in exit_file_identity(step).items()):
            return None  # an earlier attempt's file (the workdir outlives attempts) or an older script's
        job_id, started_at = document.get("job_id"), _epoch_to_datetime(document.get("started_at"))
        if not isinstance(job_id, str) or not job_id.isdigit() or started_at is None:
            return None
        # The submit time is not in the file: the job's start is the closest time it records.
        return Submission(job_id, started_at)

    # --- poll --------------------------------------------------------------------------------
    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        if not handles:
            return {}
        job_ids = ",".join(dict.fromkeys(handle.job_id for handle in handles))
        queue = await self._query_queue(job_ids)
        accounting = await self._query_accounting(job_ids)
        return {handle.job_id: await self._status(handle, queue, accounting) for handle in handles}

    async def _query_queue(self, job_ids: str) -> dict[str, QueueRecord]:
        fields = ",".join(f"{name}:|" for name in SQUEUE_FIELDS)
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={job_ids}", f"--Format={fields}"]
        result = await self._run(argv)
        if not result.succeeded:
            if "Invalid job id" in result.stderr:  # every id asked for is unknown to the controller
                return {}
            raise SlurmCommandError(
                "SLURM_QUERY_FAILED", f"squeue failed (exit {result.returncode}): {result.stderr.strip()}",
                argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return parse_squeue_output(result.stdout)

    async def _query_accounting(self, job_ids: str) -> dict[str, AccountingRecord]:
        argv = [
            "sacct",
            "--noheader",
            "--parsable2",
            f"--jobs={job_ids}",
            f"--format={','.join(SACCT_FIELDS)}",
        ]
        result = await self._run(argv)
        if not result.succeeded:
            # Accounting is optional in Slurm (and off by default on ParallelCluster): "Slurm accounting
            # storage is disabled", or slurmdbd down. The exit file then carries the outcome.
            return {}
        return parse_sacct_output(result.stdout)

    async def _status(
        self, handle: JobHandle, queue: dict[str, QueueRecord], accounting: dict[str, AccountingRecord]
    ) -> JobStatus:
        queued = queue.get(handle.job_id)
        accounted = accounting.get(handle.job_id)
        if accounted is not None and _ended_before_submit(accounted.ended_at, handle):
            accounted = None  # a job id reused after the cluster lost its state: not our job
        accounted_state = slurm_state_to_job_state(accounted.state) if accounted else None
        queued_state = slurm_state_to_job_state(queued.state) if queued else None

        if accounted is not None and accounted_state is not None and accounted_state.finished:
            return await self._finished_from_accounting(handle, accounted, accounted_state)
        if queued is not None and queued_state is not None:
            if queued_state.finished:
                return await self._finished_from_queue(handle, queued, queued_state)
            return JobStatus(
                handle=handle, state=queued_state, native_state=queued.state,
                started_at=queued.started_at if queued_state is JobState.RUNNING else None,
                reason=queued.reason if queued.reason not in ("None", "") else "",
            )  # fmt: skip
        if accounted is not None and accounted_state is not None:  # squeue raced: ended since
            return JobStatus(
                handle=handle, state=accounted_state, native_state=accounted.state,
                started_at=accounted.started_at,
            )  # fmt: skip
        return await self._finished_from_exit_file(handle, queued.state if queued else "")

    async def _finished_from_accounting(
        self, handle: JobHandle, record: AccountingRecord, state: JobState
    ) -> JobStatus:
        files = self._files(handle)
        exit_document = await self._read_exit_file(handle, files)
        logs = await self._read_logs(files)
        exit_code, signal_number = record.exit_code, record.signal
        if signal_number is not None:
            exit_code = None
        state, note = _refine_with_slurmstepd(state, logs.slurmstepd_verdict)
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code,
            signal=signal_number,
            native_state=record.state,
            started_at=record.started_at,
            ended_at=record.ended_at,
            resources=JobResources(
                elapsed_seconds=record.elapsed_seconds,
                cpu_seconds=record.cpu_seconds,
                max_rss_mb=record.max_rss_mb,
            ),
            log_tail=logs.tail,
            reason=await self._reason(handle, state, record.state, exit_code, signal_number, exit_document)
            + note,
        )

    async def _finished_from_queue(
        self, handle: JobHandle, record: QueueRecord, state: JobState
    ) -> JobStatus:
        files = self._files(handle)
        exit_document = await self._read_exit_file(handle, files)
        logs = await self._read_logs(files)
        if exit_document is not None:
            exit_code, signal_number, resources = _outcome_from_exit_file(exit_document)
        else:
            exit_code, signal_number = (
                decode_wait_status(record.raw_exit_status)
                if record.raw_exit_status is not None
                else (None, None)
            )
            resources = JobResources()
        if resources.elapsed_seconds is None and record.started_at and record.ended_at:
            resources = resources.model_copy(
                update={"elapsed_seconds": (record.ended_at - record.started_at).total_seconds()}
            )
        state, note = _refine_with_slurmstepd(state, logs.slurmstepd_verdict)
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code,
            signal=signal_number,
            native_state=record.state,
            started_at=record.started_at,
            ended_at=record.ended_at,
            resources=resources,
            log_tail=logs.tail,
            reason=await self._reason(handle, state, record.state, exit_code, signal_number, exit_document)
            + note,
        )

    async def _finished_from_exit_file(self, handle: JobHandle, queue_state: str) -> JobStatus:
        """Slurm no longer knows the job (or shows a state this module does not know)."""
        files = self._files(handle)
        exit_document = await self._read_exit_file(handle, files)
        logs = await self._read_logs(files)
        verdict = logs.slurmstepd_verdict
        if exit_document is None:
            if verdict is not None:  # slurmstepd killed the whole batch step, the script too
                state, line = verdict
                return JobStatus(
                    handle=handle, state=state, native_state=f"{state.name} (from slurmstepd's message)",
                    log_tail=logs.tail,
                    reason=(f"{await self._reason(handle, state, state.name, None, None, None)}; "
                            f"Slurm no longer knows the job, its stderr says: {line}"),
                )  # fmt: skip
            if await self._cancel_requested(handle, files):  # e.g. a pending job: it never ran
                return JobStatus(
                    handle=handle, state=JobState.CANCELLED, native_state="CANCELLED",
                    log_tail=logs.tail, reason="cancelled by stamen (scancel)",
                )  # fmt: skip
            unknown = (
                f"shows it in the unknown state {queue_state!r}" if queue_state else "no longer knows it"
            )
            return JobStatus(
                # "LOST" first (the diagnosis keys on the first word: transient, retried), then what
                # squeue still said, if anything.
                handle=handle, state=JobState.LOST, native_state=f"LOST ({queue_state})" if queue_state else "LOST",
                log_tail=logs.tail,
                reason=(f"Slurm {unknown} (not in squeue, no sacct record: is accounting enabled?) and "
                        f"its batch script left no exit file {files['exit_file']}: the job was killed "
                        f"before it could write it (SIGKILL, node lost) or the workdir is not shared "
                        f"with the compute nodes"),
            )  # fmt: skip
        exit_code, signal_number, resources = _outcome_from_exit_file(exit_document)
        received_signal = _int_or_none(exit_document.get("received_signal"))
        if received_signal is None and exit_code == 0:
            state, native = JobState.SUCCEEDED, "exit 0"
        elif verdict is not None:
            state, native = verdict[0], f"{verdict[0].name} (from slurmstepd's message)"
        elif received_signal is None:
            state = JobState.FAILED
            native = f"signal {signal_number}" if signal_number is not None else f"exit {exit_code}"
        elif _reached_time_limit(handle, resources):
            state, native = JobState.TIMEOUT, f"signal {received_signal} at the time limit"
        else:
            state, native = JobState.CANCELLED, f"signal {received_signal}"
        note = f"; its stderr says: {verdict[1]}" if verdict is not None and state is verdict[0] else ""
        return JobStatus(
            handle=handle,
            state=state,
            exit_code=exit_code,
            signal=signal_number,
            native_state=native,
            started_at=_epoch_to_datetime(exit_document.get("started_at")),
            ended_at=_epoch_to_datetime(exit_document.get("ended_at")),
            resources=resources,
            log_tail=logs.tail,
            reason=await self._reason(handle, state, native, exit_code, signal_number, exit_document) + note,
        )

    async def _reason(
        self, handle: JobHandle, state: JobState, native_state: str, exit_code: int | None,
        signal_number: int | None, exit_document: dict[str, Any] | None,
    ) -> str:  # fmt: skip
        if state is JobState.SUCCEEDED:
            return ""
        if state is JobState.FAILED:
            if signal_number is not None:
                return f"the step was killed by signal {signal_number} (Slurm state {native_state})"
            return f"the step exited with code {exit_code} (Slurm state {native_state})"
        if state is JobState.CANCELLED:
            received = _int_or_none(exit_document.get("received_signal")) if exit_document else None
            signal_text = f", the step received signal {received}" if received is not None else ""
            if await self._cancel_requested(handle, self._files(handle)):
                return f"cancelled by stamen (scancel){signal_text}"
            by_user = re.search(r"by (\d+)", native_state)
            who = f" by uid {by_user.group(1)}" if by_user else ""
            return f"cancelled outside stamen{who} (scancel or a signal; Slurm state {native_state}){signal_text}"
        if state is JobState.TIMEOUT:
            limit = handle.extra.get("time_limit_minutes")
            limit_text = f" of {limit} min" if limit else ""
            return f"the job reached its time limit{limit_text} and Slurm stopped it (Slurm state {native_state})"
        if state is JobState.OUT_OF_MEMORY:
            return f"the job used more memory than it requested (Slurm state {native_state})"
        if state is JobState.NODE_FAIL:
            return f"a node of the job failed or did not boot (Slurm state {native_state})"
        if state is JobState.PREEMPTED:
            return f"the job was preempted by a higher-priority job (Slurm state {native_state})"
        return f"Slurm state {native_state}"

    async def _read_exit_file(self, handle: JobHandle, files: dict[str, str]) -> dict[str, Any] | None:
        raw = await self._read_tail(files["exit_file"], LOG_TAIL_BYTES)
        if raw is None:
            return None
        try:
            document = json.loads(raw.decode(errors="replace"))
        except json.JSONDecodeError:
            return None
        if not isinstance(document, dict) or document.get("job_id") not in ("", handle.job_id):
            return None  # another job's file (resubmitted into the same workdir)
        return document

    async def _cancel_requested(self, handle: JobHandle, files: dict[str, str]) -> bool:
        raw = await self._read_tail(files["cancel_marker"], 4096)
        if raw is None:
            return False
        try:
            marker = json.loads(raw.decode(errors="replace"))
        except json.JSONDecodeError:
            return False
        return isinstance(marker, dict) and marker.get("job_id") == handle.job_id

    async def _read_tail(self, path: str, max_bytes: int) -> bytes | None:
        try:
            return await self.runner.read_file_tail(path, max_bytes)
        except (OSError, CommandRunnerError):
            return None

    async def _read_logs(self, files: dict[str, str]) -> JobLogs:
        tails: dict[str, str] = {}
        for label in ("stderr", "stdout"):
            raw = await self._read_tail(files[f"{label}_file"], LOG_TAIL_BYTES)
            tails[label] = (
                "\n".join(raw.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]) if raw else ""
            )
        combined = "\n".join(f"--- {label} (last lines) ---\n{text}" for label, text in tails.items() if text)
        return JobLogs(tail=combined, slurmstepd_verdict=slurmstepd_verdict(tails["stderr"]))

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, handle: JobHandle) -> None:
        files = self._files(handle)
        marker = json.dumps({"job_id": handle.job_id, "requested_at": datetime.now(UTC).isoformat()})
        try:
            await self.runner.write_file(files["cancel_marker"], marker + "\n")
        except (OSError, CommandRunnerError):
            pass  # the workdir may be gone; scancel still stops the job (its reason then says "outside")
        argv = ["scancel", handle.job_id]
        result = await self._run(argv)
        if result.succeeded or _already_gone(result.stderr):
            return
        raise SlurmCommandError(
            "SLURM_CANCEL_FAILED", f"scancel {handle.job_id} failed (exit {result.returncode}): "
            f"{result.stderr.strip()}", argv=argv, returncode=result.returncode, stderr=result.stderr,
        )  # fmt: skip


def _already_gone(stderr: str) -> bool:
    return "already completing or completed" in stderr or "Invalid job id" in stderr


def _ended_before_submit(ended_at: datetime | None, handle: JobHandle) -> bool:
    # Slurm's times have second granularity and may come from another clock: allow a minute.
    return ended_at is not None and (handle.submitted_at - ended_at).total_seconds() > 60


def _reached_time_limit(handle: JobHandle, resources: JobResources) -> bool:
    limit = handle.extra.get("time_limit_minutes")
    if not limit or not limit.isdigit() or resources.elapsed_seconds is None:
        return False
    return resources.elapsed_seconds >= int(limit) * 60 - 1


def _outcome_from_exit_file(document: dict[str, Any]) -> tuple[int | None, int | None, JobResources]:
    """(exit code, signal, resources) from the batch script's exit file."""
    status = _int_or_none(document.get("exit_code"))
    exit_code: int | None = status
    signal_number: int | None = None
    if status is not None and 128 < status <= 128 + 64:  # bash: 128 + N when the command died of signal N
        exit_code, signal_number = None, status - 128
    started, ended = document.get("started_at"), document.get("ended_at")
    elapsed = float(ended - started) if isinstance(started, int) and isinstance(ended, int) else None
    resources = JobResources(
        elapsed_seconds=elapsed, cpu_seconds=_children_cpu_seconds(document.get("children_cpu_times"))
    )
    return exit_code, signal_number, resources
