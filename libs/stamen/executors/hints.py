"""What a person does by hand about a job that stamen cannot look up itself, per executor kind.

The scheduler names no executor: it asks here, with the cluster's kind (which is all it may have left
when the cluster was removed)."""

from __future__ import annotations

from stamen.executors.slurm_commands import job_name_for


def find_and_stop_by_hand(kind: str, workset_id: str, attempt: int, step: str) -> str:
    """How to find the job of one step submission on a cluster of `kind`, and stop it."""
    if kind == "slurm":
        return (
            f"look for Slurm job name {job_name_for(workset_id, attempt, step)} (squeue/sacct) and scancel it"
        )
    return f"look for a process of step {step} running in the workset's workdir and kill it"
