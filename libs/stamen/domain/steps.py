"""Steps: a step ready to run (what the pipeline planner makes of a workset and an executor runs) and
the states of its runs."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class StepSpec(BaseModel):
    """One step of one attempt of one workset, ready to run."""

    model_config = ConfigDict(frozen=True)

    workset_id: str
    attempt: int
    step: str
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    workdir: str  # absolute path on the machine/cluster that runs the step; created if missing
    cpus: int = 1
    memory_mb: int | None = None
    time_limit_seconds: int | None = None
    outputs: list[str] = []  # what the step writes, as the pipeline declares it (paths, s3:// URIs)

    @property
    def exported(self) -> bool:
        """Every output is in S3: the step's results outlive the cluster (and region) that made them,
        so a run elsewhere reuses them instead of running the step again."""
        return bool(self.outputs) and all(o.startswith("s3://") for o in self.outputs)


class StepRunState(StrEnum):
    """A step run's state (`step_runs.state`): recorded before its job is submitted, then the job's own
    state as its executor reports it (`stamen.executors.base.JobState`, whose every value is one of these)."""

    SUBMITTING = (
        "submitting"  # recorded; its job is being submitted (no handle yet), see scheduler/dispatch.py
    )
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit, or the executor refused the step
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LOST = "lost"  # nobody knows how it ended (job vanished, region lost, submitter died unseen)


# A step run in one of these has (or may have) a job on a cluster: the workset is not between steps.
ACTIVE_STEP_RUN_STATES: frozenset[StepRunState] = frozenset(
    {StepRunState.SUBMITTING, StepRunState.PENDING, StepRunState.RUNNING}
)
