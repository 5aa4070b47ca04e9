"""A step ready to run: what the pipeline planner makes of a workset and an executor runs."""

from __future__ import annotations

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
