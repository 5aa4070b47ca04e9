"""The contract between the scheduler and every executor.

The scheduler stores each `JobHandle` in PostgreSQL, so a restarted scheduler (another process)
must be able to `poll` and `cancel` jobs it did not submit itself: executors keep no state that
matters only in memory. And because a submitter may die between starting a job and storing its
handle, every executor can `find` the job of a step submission again from the step alone: the
Slurm job name and the local runner's job file carry the workset, the attempt and the step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

# What an executor runs; defined with the domain (the pipeline planner makes it), re-exported here.
from stamen.domain.steps import StepSpec as StepSpec


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit
    CANCELLED = "cancelled"  # by stamen (cancel) or by someone else (scancel, kill)
    TIMEOUT = "timeout"  # time limit reached
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LOST = "lost"  # the job vanished: no record of how it ended (process gone, job unknown to Slurm)

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


class JobHandle(BaseModel):
    """Enough to find the job again from any process: stored as JSON by the scheduler."""

    model_config = ConfigDict(frozen=True)

    executor: str  # "local" | "slurm"
    cluster: str
    job_id: str  # local: the runner's pid; slurm: the job id
    workset_id: str
    attempt: int
    step: str
    workdir: str
    submitted_at: datetime
    extra: dict[str, str] = {}  # executor-specific (e.g. status file path, process start time)


class JobResources(BaseModel):
    elapsed_seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_mb: float | None = None


class JobStatus(BaseModel):
    handle: JobHandle
    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    native_state: str = ""  # e.g. Slurm's "OUT_OF_MEMORY", "CANCELLED by 0"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    resources: JobResources = JobResources()
    log_tail: str = ""  # last lines of stderr+stdout, for diagnostics
    reason: str = ""  # human-readable cause when not succeeded


class Executor(Protocol):
    kind: str

    async def submit(self, step: StepSpec) -> JobHandle: ...

    async def find(self, step: StepSpec) -> JobHandle | None:
        """The job of this submission of `step` (same workset, attempt and step), running or ended.

        Returns the handle `submit` returned for it (so the job can be adopted after a submitter died
        before storing it), or None when no job of this attempt of this step was ever started. A job
        of another attempt is never returned. Raises when the cluster cannot be asked: "cannot tell"
        is not "not found", and only "not found" makes it safe to submit the step again.
        """
        ...

    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """Status of every handle, keyed by job_id, in ONE query per cluster (not one per job)."""
        ...

    async def cancel(self, handle: JobHandle) -> None:
        """Stop the job (its whole process group / scancel). Idempotent; finished jobs are ignored."""
        ...


@runtime_checkable
class ReportsJobExits(Protocol):
    """An executor that can say at once that one of its jobs has ended (the local one: a pidfd per
    runner), so the scheduler polls then rather than at its next interval. Slurm cannot: it is polled."""

    def on_job_exit(self, callback: Callable[[], None]) -> None: ...
