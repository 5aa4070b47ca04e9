"""The Slurm executor against a real Slurm cluster started by conftest.py (no mocks of Slurm)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stamen.executors.base import JobHandle, JobState
from stamen.executors.remote import LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from stamen.executors.slurm_commands import SlurmCommandError
from tests.slurm.conftest import SlurmTestCluster
from tests.slurm.helpers import (
    POLL_INTERVAL_SECONDS,
    CountingRunner,
    finished,
    make_step,
    running,
    wait_for,
    wait_until_forgotten,
)


@pytest.fixture
def executor(slurm_cluster: SlurmTestCluster) -> SlurmExecutor:
    return SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))


@pytest.fixture(scope="module", autouse=True)
async def time_limited_job(slurm_cluster: SlurmTestCluster, tmp_path_factory: pytest.TempPathFactory
                           ) -> JobHandle | None:  # fmt: skip
    """A job that exceeds its time limit, submitted before this module's first test.

    Slurm's smallest time limit is one minute and slurmctld checks limits every 30 s, so the job ends
    60-90 s after it starts: it runs alongside the other tests (on one of the node's CPUs) and
    `test_time_limit_reached_is_timeout`, the last test here, checks its outcome.
    """
    if slurm_cluster.cpus < 2:
        return None
    executor = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    workdir = tmp_path_factory.mktemp("time-limited")
    return await executor.submit(make_step(workdir, "slow", "echo working; sleep 300", time_limit_seconds=1))


# --- outcomes of single jobs -------------------------------------------------------------------


async def test_passing_step_succeeds_with_resources(
    executor: SlurmExecutor, slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    step = make_step(
        tmp_path, "align",
        'echo "hello from $STAMEN_STEP with $GREETING"; for i in $(seq 1 300000); do :; done',
        env={"GREETING": "it's a \"quoted\" value"}, cpus=1, memory_mb=300, time_limit_seconds=90,
    )  # fmt: skip
    handle = await executor.submit(step)

    assert handle.executor == "slurm" and handle.job_id.isdigit()
    assert handle.extra["stdout_file"] == f"{step.workdir}/align.stdout.log"
    assert handle.extra["stderr_file"] == f"{step.workdir}/align.stderr.log"
    job = slurm_cluster.command("scontrol", "show", "job", handle.job_id).stdout
    assert "JobName=stamen:ws-1:a1:align" in job
    assert "TimeLimit=00:02:00" in job  # 90 s rounded up to whole minutes
    assert "MinMemoryNode=300M" in job
    assert f"WorkDir={step.workdir}" in job

    status = await wait_for(executor, handle, finished)

    assert status.state is JobState.SUCCEEDED, status
    assert status.exit_code == 0 and status.signal is None
    assert status.reason == ""
    assert 'hello from align with it\'s a "quoted" value' in status.log_tail
    assert status.resources.elapsed_seconds is not None and status.resources.elapsed_seconds >= 0
    assert status.resources.cpu_seconds is not None and status.resources.cpu_seconds > 0
    assert status.started_at is not None and status.ended_at is not None


async def test_failing_step_reports_exit_code_and_stderr(executor: SlurmExecutor, tmp_path: Path) -> None:
    step = make_step(tmp_path, "call", 'echo "reading input"; echo "fatal: truncated BAM file" >&2; exit 3')
    handle = await executor.submit(step)

    status = await wait_for(executor, handle, finished)

    assert status.state is JobState.FAILED, status
    assert status.exit_code == 3 and status.signal is None
    assert "fatal: truncated BAM file" in status.log_tail
    assert "reading input" in status.log_tail
    assert "exited with code 3" in status.reason


async def test_job_forgotten_by_slurm_is_read_from_its_exit_file_or_lost(
    executor: SlurmExecutor, slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    step = make_step(tmp_path, "sort", "echo 'sorting failed' >&2; exit 4")
    handle = await executor.submit(step)
    await wait_for(executor, handle, finished)
    await wait_until_forgotten(slurm_cluster, handle.job_id)

    status = (await executor.poll([handle]))[handle.job_id]

    assert status.state is JobState.FAILED, status  # never "succeeded" just because Slurm forgot it
    assert status.exit_code == 4
    assert "sorting failed" in status.log_tail

    await asyncio.to_thread(Path(handle.extra["exit_file"]).unlink)
    lost = (await executor.poll([handle]))[handle.job_id]

    assert lost.state is JobState.LOST and lost.native_state.startswith("LOST"), lost
    assert "no longer knows it" in lost.reason and "exit file" in lost.reason


async def test_cancel_through_the_executor(executor: SlurmExecutor, tmp_path: Path) -> None:
    handle = await executor.submit(make_step(tmp_path, "index", "echo started; sleep 300"))
    await wait_for(executor, handle, running)

    await executor.cancel(handle)
    status = await wait_for(executor, handle, finished)

    assert status.state is JobState.CANCELLED, status
    assert status.native_state.startswith("CANCELLED")
    assert "cancelled by stamen" in status.reason
    await executor.cancel(handle)  # idempotent: the job has ended already
    assert (await executor.poll([handle]))[handle.job_id].state is JobState.CANCELLED


async def test_cancel_of_a_pending_job(executor: SlurmExecutor, slurm_cluster: SlurmTestCluster,
                                       tmp_path: Path) -> None:  # fmt: skip
    # Held at submit (sbatch --hold), so it cannot start before it is cancelled.
    held = SlurmExecutor(cluster="test", runner=executor.runner, extra_sbatch_args=["--hold"])
    handle = await held.submit(make_step(tmp_path, "held", "echo never"))
    assert (await executor.poll([handle]))[handle.job_id].state is JobState.PENDING

    await executor.cancel(handle)
    status = await wait_for(executor, handle, finished)
    assert status.state is JobState.CANCELLED, status

    await wait_until_forgotten(slurm_cluster, handle.job_id)
    forgotten = (await executor.poll([handle]))[handle.job_id]
    assert forgotten.state is JobState.CANCELLED, forgotten  # no exit file, but stamen's cancel marker
    assert "cancelled by stamen" in forgotten.reason


async def test_scancel_from_outside_is_cancelled_with_reason(
    executor: SlurmExecutor, slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    handle = await executor.submit(make_step(tmp_path, "qc", "sleep 300"))
    await wait_for(executor, handle, running)

    slurm_cluster.command("scancel", handle.job_id)
    status = await wait_for(executor, handle, finished)

    assert status.state is JobState.CANCELLED, status
    assert "cancelled outside stamen" in status.reason

    await wait_until_forgotten(slurm_cluster, handle.job_id)
    forgotten = (await executor.poll([handle]))[handle.job_id]
    assert forgotten.state is JobState.CANCELLED, forgotten  # from the exit file: the script got SIGTERM
    assert forgotten.signal == signal.SIGTERM
    assert "received signal 15" in forgotten.reason


async def test_step_over_its_memory_request_is_out_of_memory(executor: SlurmExecutor, tmp_path: Path) -> None:
    # Holds 400 MiB for 10 s; slurmstepd samples the RSS every second and kills the step.
    hog = "import time; print('loading', flush=True); block = bytearray(400 << 20); time.sleep(10)"
    step = make_step(tmp_path, "dedup", "", argv=[sys.executable, "-c", hog], memory_mb=100)
    handle = await executor.submit(step)

    status = await wait_for(executor, handle, finished)

    # No cgroups here: jobacct_gather's OverMemoryKill kills the step and Slurm says FAILED, 0:9; the
    # executor recognises slurmstepd's message in the job's stderr.
    assert status.state is JobState.OUT_OF_MEMORY, status
    assert "more memory than it requested" in status.reason
    assert "exceeded" in status.reason.lower() and "memory limit" in status.reason


async def test_step_killed_by_a_signal_fails_with_that_signal(
    executor: SlurmExecutor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "step.pid"
    handle = await executor.submit(make_step(tmp_path, "merge", f"echo $$ > {pid_file}; exec sleep 300"))
    await wait_for(executor, handle, lambda status: pid_file.exists() and pid_file.read_text().strip() != "")

    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # e.g. the kernel's OOM killer, or an admin
    status = await wait_for(executor, handle, finished)

    assert status.state is JobState.FAILED, status
    assert status.signal == signal.SIGKILL and status.exit_code is None
    assert "killed by signal 9" in status.reason


# --- many jobs, restarts, errors -----------------------------------------------------------------


async def test_poll_of_many_jobs_runs_one_squeue_and_one_sacct(
    slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    runner = CountingRunner(slurm_cluster.env)
    executor = SlurmExecutor(cluster="test", runner=runner)
    handles = [
        await executor.submit(make_step(tmp_path, f"shard{code}", f"sleep 0.5; exit {code}"))
        for code in (0, 1, 2)
    ]
    deadline = time.monotonic() + 60
    while True:
        runner.commands.clear()
        statuses = await executor.poll(handles)
        assert [argv[0] for argv in runner.commands] == ["squeue", "sacct"], runner.commands
        assert set(statuses) == {handle.job_id for handle in handles}
        if all(status.state.finished for status in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(POLL_INTERVAL_SECONDS)

    job_ids = ",".join(handle.job_id for handle in handles)
    assert f"--jobs={job_ids}" in runner.commands[0] and f"--jobs={job_ids}" in runner.commands[1]
    outcomes = [(statuses[handle.job_id].state, statuses[handle.job_id].exit_code) for handle in handles]
    assert outcomes == [(JobState.SUCCEEDED, 0), (JobState.FAILED, 1), (JobState.FAILED, 2)]


async def test_a_new_executor_polls_and_cancels_jobs_it_did_not_submit(
    slurm_cluster: SlurmTestCluster, tmp_path: Path
) -> None:
    before_restart = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    stored = (await before_restart.submit(make_step(tmp_path, "varcall", "sleep 300"))).model_dump_json()
    del before_restart

    after_restart = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    handle = JobHandle.model_validate_json(stored)
    await wait_for(after_restart, handle, running)
    await after_restart.cancel(handle)
    status = await wait_for(after_restart, handle, finished)

    assert status.state is JobState.CANCELLED, status
    assert "cancelled by stamen" in status.reason


async def test_sbatch_error_raises_with_slurm_message(executor: SlurmExecutor, tmp_path: Path) -> None:
    bad = SlurmExecutor(cluster="test", runner=executor.runner, partition="no-such-partition")

    with pytest.raises(SlurmCommandError) as raised:
        await bad.submit(make_step(tmp_path, "bad", "true"))

    assert raised.value.code == "SLURM_SUBMIT_FAILED"
    assert "invalid partition" in raised.value.stderr.lower()
    assert "invalid partition" in str(raised.value).lower()


async def test_poll_of_no_handles_runs_nothing(slurm_cluster: SlurmTestCluster) -> None:
    runner = CountingRunner(slurm_cluster.env)
    assert await SlurmExecutor(runner=runner).poll([]) == {}
    assert runner.commands == []


# --- last: the job submitted before the first test has reached its time limit by now -----------


async def test_time_limit_reached_is_timeout(
    time_limited_job: JobHandle | None, slurm_cluster: SlurmTestCluster
) -> None:
    if time_limited_job is None:
        pytest.skip(
            f"the test cluster has {slurm_cluster.cpus} CPU: a 60-90 s job alongside the others would block them"
        )
    executor = SlurmExecutor(cluster="test", runner=LocalCommandRunner(slurm_cluster.env))
    assert time_limited_job.extra["time_limit_minutes"] == "1"
    already_waited = (datetime.now(UTC) - time_limited_job.submitted_at).total_seconds()

    status = await wait_for(executor, time_limited_job, finished, timeout=max(5.0, 120 - already_waited))

    assert status.state is JobState.TIMEOUT, status
    assert status.native_state == "TIMEOUT"
    assert "time limit of 1 min" in status.reason
    assert "working" in status.log_tail
