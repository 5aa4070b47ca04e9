"""What workset.failed reports as the executor's state: vanished jobs are always LOST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.scheduler.monitor import native_state
from stamen.executors.base import JobHandle, JobState, JobStatus

HANDLE = JobHandle(
    executor="slurm", cluster="hpc", job_id="42", workset_id="ws-1", attempt=1, step="align",
    workdir="/fsx/w", submitted_at=datetime.now(UTC),
)  # fmt: skip


@pytest.mark.parametrize(
    "state,executor_said,reported",
    [
        (JobState.LOST, "lost", "LOST"),  # the local executor's word
        (JobState.LOST, "unknown", "LOST"),  # Slurm forgot the job
        (JobState.LOST, "", "LOST"),
        (JobState.OUT_OF_MEMORY, "OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        (JobState.CANCELLED, "CANCELLED by 1000", "CANCELLED by 1000"),
        (JobState.FAILED, "exit 3", "exit 3"),
        (JobState.TIMEOUT, "", "TIMEOUT"),
    ],
)
def test_the_reported_state(state: JobState, executor_said: str, reported: str) -> None:
    assert native_state(JobStatus(handle=HANDLE, state=state, native_state=executor_said)) == reported
