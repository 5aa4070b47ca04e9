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

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobState
from stamen.executors.remote import LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from stamen.executors.slurm_commands import SlurmCommandError
from tests.slurm.conftest import SlurmTestCluster, free_tcp_port
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


async def test_find_raises_when_the_exit_file_exists_but_cannot_be_read(
    executor: SlurmExecutor, tmp_path: Path
) -> None:
    """Slurm has no record (never submitted, or forgotten) and the exit file cannot be read: that is
    "cannot tell", not "not found" (the scheduler would run a finished step again). The read failure is
    real: the exit file's path is a directory (root, as here, reads through any permission bits)."""
    step = unique_step(tmp_path, "merge", "echo merged")
    exit_file = Path(SlurmExecutor.step_files(step.workdir, step.step)["exit_file"])
    await asyncio.to_thread(exit_file.mkdir, parents=True)

    with pytest.raises(SlurmCommandError) as raised:
        await executor.find(step)

    assert raised.value.code == "SLURM_EXIT_FILE_UNREADABLE"
    assert str(exit_file) in str(raised.value) and "local" in str(raised.value)
    await asyncio.to_thread(exit_file.rmdir)  # really absent: "no exit file", so not found
    assert await executor.find(step) is None


async def test_find_raises_when_sacct_fails_and_squeue_has_no_record(
    slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    """With accounting on but slurmdbd unreachable, sacct fails: an ended job may be recorded there,
    so find must not answer None. Only "accounting storage is disabled" means "no record" (the
    test cluster's own configuration, used by the other tests). The configuration is the test
    cluster's with accounting pointed at a port where no slurmdbd listens (squeue still works)."""
    conf = slurm_cluster.conf_path.read_text().replace(
        "AccountingStorageType=accounting_storage/none",
        f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
        f"AccountingStoragePort={free_tcp_port()}",
    )
    assert "accounting_storage/slurmdbd" in conf
    conf_path = tmp_path / "slurm-with-accounting.conf"
    conf_path.write_text(conf)
    runner = CountingRunner({"SLURM_CONF": str(conf_path)})
    executor = SlurmExecutor(cluster="test", runner=runner)
    step = unique_step(tmp_path, "dedup", "echo never")

    with pytest.raises(SlurmCommandError) as raised:
        await executor.find(step)

    assert [argv[0] for argv in runner.commands] == ["squeue", "sacct"]  # squeue answered: no record
    assert raised.value.code == "SLURM_QUERY_FAILED"
    assert f"sacct --name=stamen:{step.workset_id}:a1:dedup" in str(raised.value)
    assert raised.value.stderr.strip() and "accounting storage is disabled" not in raised.value.stderr


async def test_sbatch_runs_under_timeout_and_a_real_submission_works(
    executor: SlurmExecutor, runner: CountingRunner, tmp_path: Path
) -> None:
    step = unique_step(tmp_path, "trim", "echo trimmed")
    runner.commands.clear()
    handle = await executor.submit(step)

    [submitted] = runner.commands
    bound = executor.sbatch_kill_after_seconds
    assert bound == 55 and bound < executor.command_timeout_seconds
    files = SlurmExecutor.step_files(step.workdir, step.step)
    assert list(submitted) == ["timeout", "-s", "KILL", "55", *executor.sbatch_argv(step, files)]
    assert (await wait_for(executor, handle, finished)).state is JobState.SUCCEEDED
    found = await executor.find(step)
    assert found is not None and found.job_id == handle.job_id
