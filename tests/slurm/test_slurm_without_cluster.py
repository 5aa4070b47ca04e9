"""What needs no Slurm cluster: parsing of Slurm's output (formats from the sacct/squeue manuals; the
test cluster has no slurmdbd, so sacct returns no records there) and errors raised before Slurm runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobState
from stamen.executors.remote import LocalCommandRunner
from stamen.executors.slurm import SlurmExecutor
from stamen.executors.slurm_commands import SlurmCommandError, job_name_for, render_batch_script
from stamen.executors.slurm_find import latest_submission, parse_submissions
from stamen.executors.slurm_states import (
    decode_wait_status,
    parse_exit_code,
    parse_sacct_output,
    parse_slurm_duration,
    parse_slurm_memory_mb,
    parse_squeue_output,
    slurm_state_to_job_state,
    slurmstepd_verdict,
)
from tests.slurm.conftest import free_tcp_port


def test_state_mapping_of_slurm_states() -> None:
    assert slurm_state_to_job_state("CANCELLED by 1000") is JobState.CANCELLED
    assert slurm_state_to_job_state("OUT_OF_MEMORY") is JobState.OUT_OF_MEMORY
    assert slurm_state_to_job_state("BOOT_FAIL") is JobState.NODE_FAIL
    assert slurm_state_to_job_state("DEADLINE") is JobState.TIMEOUT
    assert slurm_state_to_job_state("COMPLETING") is JobState.RUNNING
    assert slurm_state_to_job_state("SOMETHING_NEW") is None


def test_parsing_of_sacct_fields() -> None:
    assert parse_exit_code("3:0") == (3, None)
    assert parse_exit_code("0:9") == (0, 9)
    assert parse_slurm_duration("1-02:03:04") == 93784
    assert parse_slurm_duration("00:01.500") == 1.5
    assert parse_slurm_memory_mb("2048K") == 2.0
    assert parse_slurm_memory_mb("1.5G") == 1536.0
    output = (
        "41|OUT_OF_MEMORY|0:125|2024-05-01T10:00:00|2024-05-01T10:01:00|60|00:30.250|\n"
        "41.batch|OUT_OF_MEMORY|0:125|2024-05-01T10:00:00|2024-05-01T10:01:00|60|00:30.250|1024M\n"
        "41.extern|COMPLETED|0:0|2024-05-01T10:00:00|2024-05-01T10:01:00|60|00:00:00|0\n"
    )
    record = parse_sacct_output(output)["41"]
    assert (record.state, record.exit_code, record.signal) == ("OUT_OF_MEMORY", 0, 125)
    assert (record.elapsed_seconds, record.cpu_seconds, record.max_rss_mb) == (60.0, 30.25, 1024.0)


def test_parsing_of_squeue_fields() -> None:
    # squeue --Format=JobID:|,State:|,Reason:|,exit_code:|,StartTime:|,EndTime:| (exit_code: a wait status)
    output = "7|TIMEOUT|None|2304|2024-05-01T10:00:00|2024-05-01T10:01:03|\n8|PENDING|Resources|0|N/A|N/A|\n"
    records = parse_squeue_output(output)
    assert records["7"].state == "TIMEOUT" and records["7"].raw_exit_status == 2304
    assert decode_wait_status(2304) == (9, None)
    assert decode_wait_status(15) == (None, 15)
    assert records["8"].reason == "Resources" and records["8"].started_at is None


def test_slurmstepd_messages_in_stderr() -> None:
    timeout = "slurmstepd-vm: error: *** JOB 3 ON vm CANCELLED AT 2026-11-29T05:44:59 DUE TO TIME LIMIT ***"
    cancelled = "slurmstepd: error: *** JOB 12 ON node-1 CANCELLED AT 2026-11-29T05:44:59 ***"
    memory = "slurmstepd: error: Detected 1 oom_kill event in StepId=7.batch. Some of the step tasks have been OOM Killed."
    assert slurmstepd_verdict(f"some output\n{timeout}\n") == (JobState.TIMEOUT, timeout)
    assert slurmstepd_verdict(cancelled) == (JobState.CANCELLED, cancelled)
    assert slurmstepd_verdict(memory) == (JobState.OUT_OF_MEMORY, memory)
    assert slurmstepd_verdict("error: CANCELLED AT noon DUE TO TIME LIMIT (a tool's own message)") is None


async def test_missing_slurm_commands_raise_a_clear_error(tmp_path: Path) -> None:
    executor = SlurmExecutor(runner=LocalCommandRunner({"PATH": str(tmp_path / "empty")}))
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"))

    with pytest.raises(SlurmCommandError) as raised:
        await executor.submit(step)

    assert raised.value.code == "SLURM_COMMAND_MISSING"
    assert "sbatch" in str(raised.value)
    assert (tmp_path / "w" / "s.slurm.sh").is_file()  # the workdir was prepared before sbatch ran


async def test_invalid_environment_names_are_refused_before_submitting(tmp_path: Path) -> None:
    executor = SlurmExecutor(runner=LocalCommandRunner({"PATH": str(tmp_path / "empty")}))
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"),
                    env={"NOT VALID": "x"})  # fmt: skip

    with pytest.raises(ValueError, match="NOT VALID"):
        await executor.submit(step)


def test_both_wordings_of_slurmstepd_memory_kill_mean_out_of_memory() -> None:
    from stamen.executors.base import JobState
    from stamen.executors.slurm_states import slurmstepd_verdict

    for line in (
        "slurmstepd: error: Exceeded job memory limit",
        "slurmstepd: error: Step 19.0 exceeded memory limit (409600 > 102400), being killed",
        "slurmstepd: error: StepId=24.batch exceeded memory limit (419516 > 102400), being killed",
    ):
        assert slurmstepd_verdict(f"loading\n{line}\n") == (JobState.OUT_OF_MEMORY, line)


def test_the_exit_file_names_its_submission_whatever_the_names_contain(tmp_path: Path) -> None:
    """The batch script, run by bash without Slurm: the exit file is JSON that says which workset,
    attempt and step it belongs to (printf must not interpret a % in a name)."""
    step = StepSpec(workset_id='ws-%s-"q"', attempt=4, step="call%d", argv=["true"], workdir=str(tmp_path))
    exit_file = tmp_path / "call.exit.json"
    script = tmp_path / "call.slurm.sh"
    script.write_text(render_batch_script(step, str(exit_file)))
    subprocess.run(["bash", str(script)], check=True, timeout=30, env={"PATH": os.environ["PATH"]})
    document = json.loads(exit_file.read_text())
    assert document["workset_id"] == 'ws-%s-"q"' and document["attempt"] == 4 and document["step"] == "call%d"
    assert document["exit_code"] == 0 and document["job_id"] == ""  # not run by Slurm: no job id


async def test_find_raises_when_squeue_cannot_answer(tmp_path: Path) -> None:
    """ "Cannot ask" must never read as "not found": the scheduler would submit the step again."""
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"))
    missing = SlurmExecutor(runner=LocalCommandRunner({"PATH": str(tmp_path / "empty")}))
    with pytest.raises(SlurmCommandError) as raised:
        await missing.find(step)
    assert raised.value.code == "SLURM_COMMAND_MISSING" and "squeue" in str(raised.value)

    if shutil.which("squeue") is None:
        pytest.skip("squeue is not installed: its own failure cannot be shown")
    broken_conf = tmp_path / "slurm.conf"  # no ClusterName: squeue fails at once (a missing file retries)
    broken_conf.write_text("# not a cluster\n")
    broken = SlurmExecutor(runner=LocalCommandRunner({"SLURM_CONF": str(broken_conf)}))
    with pytest.raises(SlurmCommandError) as raised:
        await broken.find(step)
    assert raised.value.code == "SLURM_QUERY_FAILED" and "squeue --name=stamen:ws:a1:s" in str(raised.value)


def test_parsing_of_found_submissions() -> None:
    # squeue --format=%A|%V, and sacct --parsable2 --format=JobIDRaw,Submit (steps folded away)
    found = parse_submissions(
        "41|2024-05-01T10:00:00\n41.batch|2024-05-01T10:00:00\n57|2024-05-02T08:00:00\n"
    )
    assert [s.job_id for s in found] == ["41", "57"]
    latest = latest_submission(found)
    assert latest is not None and latest.job_id == "57"
    assert latest_submission(parse_submissions("")) is None
    assert job_name_for("ws 1", 2, "a/b") == "stamen:ws_1:a2:a_b"


async def test_sbatch_missing_beside_timeout_is_a_missing_command(tmp_path: Path) -> None:
    """`timeout` is there but sbatch is not: timeout exits 127, which is SLURM_COMMAND_MISSING as well."""
    timeout_binary = shutil.which("timeout")
    if timeout_binary is None:
        pytest.skip("coreutils timeout is not installed")
    only_timeout = tmp_path / "bin"
    only_timeout.mkdir()
    (only_timeout / "timeout").symlink_to(timeout_binary)
    executor = SlurmExecutor(runner=LocalCommandRunner({"PATH": str(only_timeout)}))
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"))

    with pytest.raises(SlurmCommandError) as raised:
        await executor.submit(step)

    assert raised.value.code == "SLURM_COMMAND_MISSING" and raised.value.returncode == 127
    assert "sbatch" in raised.value.stderr


def unreachable_cluster_conf(tmp_path: Path) -> Path:
    """A cluster whose controller cannot be reached (nothing listens on its port): sbatch keeps retrying."""
    conf = tmp_path / "unreachable.conf"
    conf.write_text(
        f"ClusterName=unreachable\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={free_tcp_port()}\n"
    )
    return conf


async def test_sbatch_that_hangs_is_killed_on_the_head_node_before_the_command_timeout(
    tmp_path: Path,
) -> None:
    if shutil.which("sbatch") is None or shutil.which("timeout") is None:
        pytest.skip("sbatch or coreutils timeout is not installed")
    conf = unreachable_cluster_conf(tmp_path)
    executor = SlurmExecutor(runner=LocalCommandRunner({"SLURM_CONF": str(conf)}), command_timeout_seconds=10)
    assert executor.sbatch_kill_after_seconds == 5
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"))

    started = time.monotonic()
    with pytest.raises(SlurmCommandError) as raised:
        await executor.submit(step)

    # `timeout` killed sbatch (a return code); the runner's own timeout would raise without one.
    assert raised.value.code == "SLURM_UNREACHABLE" and raised.value.returncode in (137, -9)
    assert "killed (timeout -s KILL)" in str(raised.value) and "find() tells which" in str(raised.value)
    assert 5 <= time.monotonic() - started < 10


def test_an_orphaned_sbatch_cannot_outlive_its_bound(tmp_path: Path) -> None:
    """The scheduler's command timeout dies with the scheduler: the command it started must still end
    within the bound by itself. Nobody waits on this one with a timeout, as after the submitter died."""
    if shutil.which("sbatch") is None or shutil.which("timeout") is None:
        pytest.skip("sbatch or coreutils timeout is not installed")
    executor = SlurmExecutor(command_timeout_seconds=8)  # sbatch bound: 3 s
    step = StepSpec(workset_id="ws", attempt=1, step="s", argv=["true"], workdir=str(tmp_path / "w"))
    files = SlurmExecutor.step_files(step.workdir, step.step)
    (tmp_path / "w").mkdir()
    Path(files["batch_script"]).write_text(render_batch_script(step, files["exit_file"]))
    env = {**os.environ, "SLURM_CONF": str(unreachable_cluster_conf(tmp_path))}

    started = time.monotonic()
    process = subprocess.Popen(executor.submit_argv(step, files), env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # Generous for a loaded machine; an sbatch left alone retries far longer, and exits 1, not -9.
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == -9, "sbatch was not killed by its `timeout`"
    assert time.monotonic() - started < 30


def test_command_timeout_must_leave_room_for_the_sbatch_bound() -> None:
    with pytest.raises(ValueError, match="command_timeout_seconds=5 is too short"):
        SlurmExecutor(command_timeout_seconds=5)
    assert SlurmExecutor(command_timeout_seconds=6).sbatch_kill_after_seconds == 1
