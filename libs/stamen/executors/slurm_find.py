"""Finding the job of one step submission again, from the step alone (`Executor.find`): a scheduler that
died between sbatch and storing the job id left a `submitting` step run, and the next one adopts its
job rather than submit the step twice.

The job name (`stamen:<workset>:a<attempt>:<step>`) is unique per attempt: ONE `squeue --name`, then
`sacct --name` (when accounting is on), then the step's exit file. What cannot be asked raises, since
"cannot tell" must never read as "not found" (the scheduler submits the step again on "not found").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from stamen.domain.steps import StepSpec
from stamen.executors.remote import CommandRunnerError
from stamen.executors.slurm_commands import (
    LOG_TAIL_BYTES,
    SlurmCommandError,
    SlurmCommands,
    exit_file_identity,
    job_name,
    runner_error_code,
    step_files,
)
from stamen.executors.slurm_states import epoch_to_datetime, parse_slurm_time

# `sacct --name` without a start time only shows jobs since midnight: look back this far instead (a
# scheduler finds its orphaned submissions at its next pass, so days are plenty).
FIND_ACCOUNTING_LOOKBACK = "now-30days"
# What sacct says (exit 1) on a cluster without accounting (AccountingStorageType=accounting_storage/none):
# the one sacct failure that means "no record" rather than "cannot tell" (slurmdbd down, ...).
ACCOUNTING_DISABLED_MESSAGE = "accounting storage is disabled"


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


class SlurmJobFinder:
    """Looks a step submission's job up by its name, then by its exit file."""

    def __init__(self, commands: SlurmCommands) -> None:
        self._commands = commands

    async def find(self, step: StepSpec) -> Submission | None:
        """The job named `job_name(step)`: squeue (every pending or running job, and ended ones for
        MinJobAge seconds), else sacct (when accounting is on), else this attempt's exit file. squeue
        failing, sacct failing for another reason than "accounting storage is disabled", or the exit
        file existing but not being readable raise SlurmCommandError."""
        name = job_name(step)
        found = await self._in_queue(name) or await self._in_accounting(name)
        return found if found is not None else await self._by_exit_file(step)

    async def _in_queue(self, name: str) -> Submission | None:
        # --all: also partitions hidden from this user; %A is the job id, %V its submit time.
        argv = ["squeue", "--noheader", "--all", "--states=all", f"--name={name}", "--format=%A|%V"]
        result = await self._commands.run(argv)
        if not result.succeeded:
            raise SlurmCommandError(
                "SLURM_QUERY_FAILED", f"squeue --name={name} failed (exit {result.returncode}): "
                f"{result.stderr.strip()}", argv=argv, returncode=result.returncode, stderr=result.stderr,
            )  # fmt: skip
        return latest_submission(parse_submissions(result.stdout))

    async def _in_accounting(self, name: str) -> Submission | None:
        argv = ["sacct", "--noheader", "--parsable2", f"--name={name}",
                f"--starttime={FIND_ACCOUNTING_LOOKBACK}", "--format=JobIDRaw,Submit"]  # fmt: skip
        result = await self._commands.run(argv)
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

    async def _by_exit_file(self, step: StepSpec) -> Submission | None:
        """An ended job that Slurm has forgotten: its exit file, if it is this attempt's."""
        exit_file = step_files(step.workdir, step.step)["exit_file"]
        try:
            # Not SlurmCommands.read_tail (poll's, which takes any read error for "no file"): only a file
            # that does not exist is "no exit file"; any other failure (SSH down, permissions, I/O) is
            # "cannot tell".
            raw = await self._commands.runner.read_file_tail(exit_file, LOG_TAIL_BYTES)
        except CommandRunnerError as error:
            code = runner_error_code(error)
            raise SlurmCommandError(
                "SLURM_EXIT_FILE_UNREADABLE" if code == "SSH_FILE_OPERATION_FAILED" else code,
                f"cannot read exit file {exit_file} on {self._commands.runner.description}: {error}",
            ) from error
        except OSError as error:
            raise SlurmCommandError(
                "SLURM_EXIT_FILE_UNREADABLE",
                f"cannot read exit file {exit_file} on {self._commands.runner.description}: {error}",
            ) from error
        try:
            document = json.loads(raw.decode(errors="replace")) if raw else None
        except json.JSONDecodeError:
            return None
        if not isinstance(document, dict):
            return None
        if any(document.get(key) != value for key, value in exit_file_identity(step).items()):
            return None  # an earlier attempt's file (the workdir outlives attempts) or an older script's
        job_id, started_at = document.get("job_id"), epoch_to_datetime(document.get("started_at"))
        if not isinstance(job_id, str) or not job_id.isdigit() or started_at is None:
            return None
        # The submit time is not in the file: the job's start is the closest time it records.
        return Submission(job_id, started_at)
