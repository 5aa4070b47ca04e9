"""`SlurmExecutor.find` against the real test cluster: the job of one step submission, by its job name.

A scheduler that died between sbatch and storing the job id asks for it again; find must return the
handle submit returned for that job (pending, running or ended), and None for a step that was never
submitted, also when another attempt of the same step ran in the same workdir.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from stamen.executors.base import JobHandle, JobState, StepSpec
from stamen.executors.remote import LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from tests.slurm.conftest import SlurmTestCluster
from tests.slurm.helpers import CountingRunner, finished, make_step, wait_for, wait_until_forgotten


@pytest.fixture
def runner(slurm_cluster: SlurmTestCluster) -> CountingRunner:
    return CountingRunner(slurm_cluster.env)


@pytest.fixture
def executor(runner: CountingRunner) -> SlurmExecutor:
    return SlurmExecutor(cluster="test", runner=runner)


def unique_step(tmp_path: Path, name: str, script: str, **overrides: object) -> StepSpec:
    """A step of a workset of its own: the test cluster outlives tests, job names must not repeat."""
    return make_step(tmp_path, name, script, workset_id=f"ws-{uuid.uuid4().hex[:12]}", **overrides)


def same_job(found: JobHandle | None, submitted: JobHandle) -> bool:
    """Equal to what submit returned; the submit time is Slurm's own (whole seconds, its clock)."""
    assert found is not None, "the submitted job was not found"
    assert abs((found.submitted_at - submitted.submitted_at).total_seconds()) < 60, (found, submitted)
    return found.model_dump(exclude={"submitted_at"}) == submitted.model_dump(exclude={"submitted_at"})


async def test_find_returns_the_pending_job_and_none_for_an_unsubmitted_step(
    executor: SlurmExecutor, runner: CountingRunner, tmp_path: Path
) -> None:
    step = unique_step(tmp_path, "align", "echo never", time_limit_seconds=90)
    runner.commands.clear()
    assert await executor.find(step) is None
    # Not in the queue, so accounting is asked (disabled here), then the exit file is looked for.
    assert [argv[0] for argv in runner.commands] == ["squeue", "sacct"]

    held = SlurmExecutor(cluster="test", runner=runner, extra_sbatch_args=["--hold"])  # stays pending
    handle = await held.submit(step)
    try:
        runner.commands.clear()
        found = await executor.find(step)
        assert same_job(found, handle)
        assert found is not None and found.extra["time_limit_minutes"] == "2"
        [squeue] = runner.commands  # a queued job: one squeue, nothing else
        assert squeue[0] == "squeue" and "--name=" + f"stamen:{step.workset_id}:a1:align" in squeue
        assert (await executor.poll([found]))[found.job_id].state is JobState.PENDING

        assert await executor.find(step.model_copy(update={"attempt": 2})) is None  # another attempt
        assert await executor.find(step.model_copy(update={"step": "sort"})) is None
    finally:
        await executor.cancel(handle)


async def test_find_an_ended_job_slurm_has_forgotten_by_its_exit_file(
    executor: SlurmExecutor, slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    step = unique_step(tmp_path, "sort", "echo sorted")
    handle = await executor.submit(step)
    assert (await wait_for(executor, handle, finished)).state is JobState.SUCCEEDED
    await wait_until_forgotten(slurm_cluster, handle.job_id)  # no squeue record, and no accounting here

    found = await executor.find(step)
    assert same_job(found, handle)
    assert found is not None
    assert (await executor.poll([found]))[found.job_id].state is JobState.SUCCEEDED
    exit_file = Path(handle.extra["exit_file"])
    document = json.loads(await asyncio.to_thread(exit_file.read_text))
    assert (document["workset_id"], document["attempt"], document["step"]) == (step.workset_id, 1, "sort")

    # The workdir outlives attempts: attempt 1's exit file is not attempt 2's job.
    assert await executor.find(step.model_copy(update={"attempt": 2})) is None
    await asyncio.to_thread(
        exit_file.unlink
    )  # a job killed before it could write it: nothing says it ever ran
    assert await executor.find(step) is None


async def test_find_a_running_job_from_a_new_executor(
    slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    before_crash = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    step = unique_step(tmp_path, "call", "echo calling; sleep 300")
    handle = await before_crash.submit(step)
    after_restart = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    try:
        await wait_for(after_restart, handle, lambda status: status.state is JobState.RUNNING)
        found = await after_restart.find(step)
        assert same_job(found, handle)
        assert found is not None
        await after_restart.cancel(found)
        status = await wait_for(after_restart, found, finished)
        assert status.state is JobState.CANCELLED and "cancelled by stamen" in status.reason
    finally:
        await after_restart.cancel(handle)
