"""The `slurm` executor: every step is a Slurm batch job.

`submit` writes a bash batch script into the step's workdir and submits it with `sbatch --parsable`;
`poll` asks the cluster about all handles at once (`slurm_status`); `cancel` runs `scancel`; `find`
looks a step submission up by its job name, unique per attempt (`slurm_find`). sbatch runs under
`timeout -s KILL`, so it cannot outlive the executor's command timeout even when the process that
started it has died. All commands go through a `CommandRunner` (`slurm_commands`), so the same
executor drives a local cluster or a remote head node over SSH.

The batch script writes the step's own outcome into the workdir when the command ends (also when
Slurm signals it), so a job is never taken as succeeded just because Slurm has forgotten it. The
workdir must be on a file system that the compute nodes and the runner share.
docs/executors-slurm.md has the details.

    slurm_commands.py   job names, the batch script, sbatch's argv, running commands (here or SSH)
    slurm_states.py     parsing: Slurm's states, squeue/sacct output, slurmstepd's messages, exit files
    slurm_status.py     poll: one squeue + one sacct for all jobs, weighed with the job's files
    slurm_find.py       find: a submission's job by its name, then by its exit file
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobStatus
from stamen.executors.remote import CommandRunner, CommandRunnerError, LocalCommandRunner
from stamen.executors.slurm_commands import (
    SBATCH_KILL_MARGIN_SECONDS,
    SlurmCommandError,
    SlurmCommands,
    handle_files,
    job_name,
    render_batch_script,
    sbatch_argv,
    sbatch_kill_after_seconds,
    step_files,
    time_limit_minutes,
)
from stamen.executors.slurm_find import SlurmJobFinder
from stamen.executors.slurm_status import SlurmStatusReader

KIND = "slurm"
# When `timeout -s KILL` fires, it kills its process group, itself included: a parent sees signal 9
# (-9 from a local subprocess or an SSH channel that exec'd it) or 128 + 9 from a shell. A shell's or
# timeout's status when the command cannot be run (126) or is not found (127).
_KILLED_BY_TIMEOUT = (137, -9)
_NOT_RUNNABLE = (126, 127)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
        self._commands = SlurmCommands(self.runner, command_timeout_seconds)
        self._finder = SlurmJobFinder(self._commands)
        self._status = SlurmStatusReader(self._commands)

    @staticmethod
    def step_files(workdir: str, step: str) -> dict[str, str]:
        return step_files(workdir, step)

    # --- submit ------------------------------------------------------------------------------
    def sbatch_argv(self, step: StepSpec, files: dict[str, str]) -> list[str]:
        return sbatch_argv(step, files, partition=self.partition, account=self.account,
                           extra_args=self.extra_sbatch_args)  # fmt: skip

    @property
    def sbatch_kill_after_seconds(self) -> int:
        """How long sbatch may run on the head node before `timeout` kills it (below the command timeout)."""
        return sbatch_kill_after_seconds(self.command_timeout_seconds)

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
        files = step_files(step.workdir, step.step)
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
        result = await self._commands.run(
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
        extra = step_files(step.workdir, step.step)
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
        """The job of this submission of `step` (see `slurm_find`); raises SlurmCommandError when the
        cluster cannot be asked: the scheduler resubmits the step on None, so "cannot tell" must never
        read as "not found"."""
        found = await self._finder.find(step)
        return self._handle(step, found.job_id, found.submitted_at) if found else None

    # --- poll --------------------------------------------------------------------------------
    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        return await self._status.poll(handles)

    # --- cancel ------------------------------------------------------------------------------
    async def cancel(self, handle: JobHandle) -> None:
        files = handle_files(handle)
        marker = json.dumps({"job_id": handle.job_id, "requested_at": datetime.now(UTC).isoformat()})
        try:
            await self.runner.write_file(files["cancel_marker"], marker + "\n")
        except (OSError, CommandRunnerError):
            pass  # the workdir may be gone; scancel still stops the job (its reason then says "outside")
        argv = ["scancel", handle.job_id]
        result = await self._commands.run(argv)
        if result.succeeded or _already_gone(result.stderr):
            return
        raise SlurmCommandError(
            "SLURM_CANCEL_FAILED", f"scancel {handle.job_id} failed (exit {result.returncode}): "
            f"{result.stderr.strip()}", argv=argv, returncode=result.returncode, stderr=result.stderr,
        )  # fmt: skip


def _already_gone(stderr: str) -> bool:
    return "already completing or completed" in stderr or "Invalid job id" in stderr
