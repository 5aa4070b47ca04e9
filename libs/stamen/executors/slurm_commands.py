"""What the Slurm executor runs on the head node, and how: job names, the batch script, sbatch's argv,
and `SlurmCommands`, which runs Slurm's commands through a `CommandRunner` (here or over SSH) and turns
a command that cannot be run at all into a `SlurmCommandError`.

The files of one step, in its workdir (shared by the head node and the compute nodes):

    <step>.slurm.sh      the batch script
    <step>.stdout.log    the command's stdout (sbatch --output)
    <step>.stderr.log    the command's stderr (sbatch --error)
    <step>.exit.json     written atomically by the batch script when the command has ended (with
                         the job id, the workset, the attempt and the step)
    <step>.cancel        written by `cancel` before it runs scancel, so poll knows stamen stopped it
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Sequence

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle
from stamen.executors.remote import CommandResult, CommandRunner, CommandRunnerError

LOG_TAIL_BYTES = 64 * 1024
# sbatch runs as `timeout -s KILL <command timeout - this> sbatch ...` on the head node: the bound holds
# even when the process that started it (and enforces the command timeout) has died, which the
# scheduler's wait before resubmitting a `submitting` step relies on.
SBATCH_KILL_MARGIN_SECONDS = 5
_JOB_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:+-]")
# CommandRunnerError codes -> SlurmCommandError codes (SSH_* codes are passed on as they are).
_RUNNER_ERROR_CODES = {
    "COMMAND_NOT_RUNNABLE": "SLURM_COMMAND_MISSING",
    "COMMAND_TIMEOUT": "SLURM_UNREACHABLE",
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


def job_name(step: StepSpec) -> str:
    """`stamen:<workset>:a<attempt>:<step>`, safe for squeue/sacct output: one name per submission of
    a step (a retry is a new attempt, so a new name), which is how `find` recognises the job."""
    return job_name_for(step.workset_id, step.attempt, step.step)


def job_name_for(workset_id: str, attempt: int, step: str) -> str:
    return _JOB_NAME_UNSAFE.sub("_", f"stamen:{workset_id}:a{attempt}:{step}")


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


def step_files(workdir: str, step: str) -> dict[str, str]:
    """Where a step's files are (see the module docstring)."""
    base = workdir.rstrip("/") or "/"
    return {
        "batch_script": f"{base}/{step}.slurm.sh",
        "stdout_file": f"{base}/{step}.stdout.log",
        "stderr_file": f"{base}/{step}.stderr.log",
        "exit_file": f"{base}/{step}.exit.json",
        "cancel_marker": f"{base}/{step}.cancel",
    }


def handle_files(handle: JobHandle) -> dict[str, str]:
    """A submitted job's files: as its handle recorded them, else where they are now."""
    defaults = step_files(handle.workdir, handle.step)
    return {name: handle.extra.get(name, path) for name, path in defaults.items()}


def sbatch_argv(
    step: StepSpec, files: dict[str, str], *, partition: str | None, account: str | None,
    extra_args: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    argv = ["sbatch", "--parsable", f"--job-name={job_name(step)}", f"--chdir={step.workdir}",
            f"--output={files['stdout_file']}", f"--error={files['stderr_file']}", "--nodes=1",
            "--ntasks=1", f"--cpus-per-task={step.cpus}", "--export=ALL", "--no-requeue"]  # fmt: skip
    if step.memory_mb is not None:
        argv.append(f"--mem={step.memory_mb}M")
    if step.time_limit_seconds is not None:
        argv.append(f"--time={time_limit_minutes(step.time_limit_seconds)}")
    if partition:
        argv.append(f"--partition={partition}")
    if account:
        argv.append(f"--account={account}")
    return [*argv, *extra_args, files["batch_script"]]


def sbatch_kill_after_seconds(command_timeout_seconds: float) -> int:
    """How long sbatch may run on the head node before `timeout` kills it (below the command timeout)."""
    return max(1, math.floor(command_timeout_seconds) - SBATCH_KILL_MARGIN_SECONDS)


class SlurmCommands:
    """Slurm's commands and the step's files on the machine where they work, through `runner`."""

    def __init__(self, runner: CommandRunner, command_timeout_seconds: float) -> None:
        self.runner = runner
        self.command_timeout_seconds = command_timeout_seconds

    async def run(self, argv: Sequence[str], *, label: str | None = None) -> CommandResult:
        """Run a Slurm command; a command that cannot be run at all raises SlurmCommandError."""
        try:
            return await self.runner.run(argv, timeout=self.command_timeout_seconds)
        except CommandRunnerError as error:
            raise SlurmCommandError(
                runner_error_code(error),
                f"{label or argv[0]} on {self.runner.description}: {error}",
                argv=argv,
            ) from error

    async def read_tail(self, path: str, max_bytes: int) -> bytes | None:
        """The file's last bytes, or None when it cannot be read for whatever reason (for poll, which
        takes a missing or unreadable file for "no file"; find must tell the two apart)."""
        try:
            return await self.runner.read_file_tail(path, max_bytes)
        except (OSError, CommandRunnerError):
            return None


def runner_error_code(error: CommandRunnerError) -> str:
    return _RUNNER_ERROR_CODES.get(error.code, error.code)
