"""Helpers shared by the Slurm executor's tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobState, JobStatus
from stamen.executors.remote import CommandResult, LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from tests.slurm.conftest import SlurmTestCluster

POLL_INTERVAL_SECONDS = 0.25


class CountingRunner(LocalCommandRunner):
    """The local runner, recording every command it runs (to count Slurm queries)."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.commands: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], *, timeout: float = 60.0) -> CommandResult:
        self.commands.append(tuple(argv))
        return await super().run(argv, timeout=timeout)


def make_step(tmp_path: Path, name: str, script: str, **overrides: object) -> StepSpec:
    fields: dict[str, object] = {
        "workset_id": "ws-1",
        "attempt": 1,
        "step": name,
        "argv": ["bash", "-c", script],
        "workdir": str(tmp_path / "work" / name),
        **overrides,
    }
    return StepSpec.model_validate(fields)


async def wait_for(
    executor: SlurmExecutor, handle: JobHandle, condition: Callable[[JobStatus], bool], timeout: float = 30.0
) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = (await executor.poll([handle]))[handle.job_id]
        if condition(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {handle.job_id} still {status.state} after {timeout:g} s: {status}")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


def finished(status: JobStatus) -> bool:
    return status.state.finished


def running(status: JobStatus) -> bool:
    return status.state is JobState.RUNNING


def known_to_squeue(cluster: SlurmTestCluster, job_id: str) -> bool:
    result = cluster.command(
        "squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%i", check=False
    )
    return job_id in result.stdout.split()


async def wait_until_forgotten(cluster: SlurmTestCluster, job_id: str, timeout: float = 90.0) -> None:
    """Wait until slurmctld has purged the ended job (MinJobAge), so only the exit file is left."""
    deadline = time.monotonic() + timeout
    while known_to_squeue(cluster, job_id):
        assert time.monotonic() < deadline, f"slurmctld still knows job {job_id} after {timeout:g} s"
        await asyncio.sleep(0.5)
