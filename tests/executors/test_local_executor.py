"""The local executor against real processes: outcomes, limits, cancel, and jobs found again by others."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobState, JobStatus
from stamen.executors.local import LOST_REASON, LocalExecutor, group_is_alive, process_is_alive, runner_pid
from stamen.executors.local_files import read_job_record, tail
from stamen.executors.local_proc import proc_stat_fields
from stamen.executors.local_runner import boot_id

GRACE_SECONDS = 1.0


def python_step(workdir: Path, code: str, step: str = "step", **limits: int) -> StepSpec:
    return StepSpec(
        workset_id="ws-local",
        attempt=1,
        step=step,
        argv=[sys.executable, "-c", code],
        workdir=str(workdir),
        **limits,
    )


async def wait_for(executor: LocalExecutor, handle: JobHandle, timeout: float = 20.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = (await executor.poll([handle]))[handle.job_id]
        if status.state.finished:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle.step} still {status.state} after {timeout}s")
        await asyncio.sleep(0.05)


async def wait_until_running(executor: LocalExecutor, handle: JobHandle, ready_file: Path) -> dict[str, int]:
    """Wait until the command has started and written `ready_file`; the runner's record of it."""
    deadline = time.monotonic() + 20
    while not file_exists(ready_file):
        status = (await executor.poll([handle]))[handle.job_id]
        assert not status.state.finished, status
        assert time.monotonic() < deadline, "the command did not start"
        await asyncio.sleep(0.05)
    status = (await executor.poll([handle]))[handle.job_id]
    assert status.state is JobState.RUNNING
    assert status.started_at is not None
    record = read_job_record(handle.extra["job_file"])
    assert record is not None and record.running is not None, record
    return record.running


def file_exists(path: Path) -> bool:
    # Non-empty: the step creates the file before it writes to it, so an empty one is still being written.
    return path.exists() and path.stat().st_size > 0


def signals_pending(pid: int) -> bool:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        masks = [line.split(":", 1)[1] for line in status if line.startswith(("SigPnd", "ShdPnd"))]
    return any(int(mask, 16) for mask in masks)


def start_time_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def runner_done_with(handle: JobHandle, timeout: float = 5.0) -> bool:
    """The job's runner has reaped every process of the job (it then waits for its next job, or ends)."""
    pid = runner_pid(handle)
    deadline = time.monotonic() + timeout
    while process_is_alive(pid, handle.extra["runner_start_time"]) and any(
        (fields := proc_stat_fields(int(entry.name))) and int(fields[1]) == pid
        for entry in os.scandir("/proc")
        if entry.name.isdigit()
    ):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while group_is_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# A command with a grandchild in its process group, that writes "ready" once both exist.
SLEEPER_WITH_CHILD = (
    "import subprocess, sys, time, pathlib\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "pathlib.Path('child.pid').write_text(str(child.pid))\n"
    "pathlib.Path('ready').write_text('1')\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def executor() -> LocalExecutor:
    return LocalExecutor(grace_seconds=GRACE_SECONDS)


async def test_passing_step_succeeds_with_output_and_resources(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    handle = await executor.submit(
        python_step(tmp_path, "import sys; print('hello from the step'); print('a warning', file=sys.stderr)")
    )
    assert handle.executor == "local" and runner_pid(handle) > 0
    status = await wait_for(executor, handle)
    assert status.state is JobState.SUCCEEDED
    assert status.exit_code == 0 and status.signal is None and status.reason == ""
    assert "hello from the step" in status.log_tail
    assert status.log_tail.index("a warning") < status.log_tail.index("hello from the step")  # stderr first
    assert (tmp_path / "step.stdout.log").read_text() == "hello from the step\n"
    assert status.started_at is not None and status.ended_at is not None
    assert status.started_at <= status.ended_at
    assert status.resources.elapsed_seconds is not None and status.resources.elapsed_seconds > 0
    assert status.resources.cpu_seconds is not None and status.resources.cpu_seconds > 0
    assert status.resources.max_rss_mb is not None and status.resources.max_rss_mb > 1
    assert runner_done_with(handle), "the runner kept a process of the step after writing its status"


async def test_failing_step_reports_exit_code_and_stderr(executor: LocalExecutor, tmp_path: Path) -> None:
    code = "import sys; print('reading input.bam', file=sys.stderr); sys.exit(3)"
    status = await wait_for(executor, await executor.submit(python_step(tmp_path, code)))
    assert status.state is JobState.FAILED
    assert status.exit_code == 3 and status.signal is None
    assert "reading input.bam" in status.log_tail
    assert "exited with code 3" in status.reason
    assert status.native_state == "exit 3"


async def test_command_that_does_not_exist_fails_with_127(executor: LocalExecutor, tmp_path: Path) -> None:
    step = StepSpec(
        workset_id="w", attempt=1, step="missing", argv=["/nonexistent/tool"], workdir=str(tmp_path)
    )
    status = await wait_for(executor, await executor.submit(step))
    assert status.state is JobState.FAILED
    assert status.exit_code == 127
    assert "could not be started" in status.reason and "/nonexistent/tool" in status.reason


async def test_step_env_and_workdir_reach_the_command(executor: LocalExecutor, tmp_path: Path) -> None:
    workdir = tmp_path / "created" / "here"
    step = StepSpec(
        workset_id="ws-9", attempt=2, step="env", workdir=str(workdir), env={"SAMPLE": "NA12878"},
        argv=[sys.executable, "-c", "import os; print(os.getcwd(), os.environ['SAMPLE'], os.environ['STAMEN_ATTEMPT'])"],
    )  # fmt: skip
    status = await wait_for(executor, await executor.submit(step))
    assert status.state is JobState.SUCCEEDED
    assert (workdir / "env.stdout.log").read_text().split() == [str(workdir), "NA12878", "2"]


async def test_a_step_inherits_the_environment_as_it_is_when_submitted(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps start from a fork server made on first use; what the submitting process's environment gained
    or lost since then reaches the step all the same, as it would reach a child started now."""
    monkeypatch.setenv("STAMEN_TEST_GONE", "was here")
    show = "import os; print(os.environ.get('STAMEN_TEST_NEW', '-'), os.environ.get('STAMEN_TEST_GONE', '-'))"
    first = await wait_for(executor, await executor.submit(python_step(tmp_path / "a", show, step="before")))
    assert (tmp_path / "a" / "before.stdout.log").read_text().split() == ["-", "was", "here"], first
    monkeypatch.setenv("STAMEN_TEST_NEW", "set-later")
    monkeypatch.delenv("STAMEN_TEST_GONE")
    second = await wait_for(executor, await executor.submit(python_step(tmp_path / "b", show, step="after")))
    assert (tmp_path / "b" / "after.stdout.log").read_text().split() == ["set-later", "-"], second


async def test_cancel_stops_the_whole_process_group(executor: LocalExecutor, tmp_path: Path) -> None:
    handle = await executor.submit(python_step(tmp_path, SLEEPER_WITH_CHILD))
    running = await wait_until_running(executor, handle, tmp_path / "ready")
    pgid = running["command_pgid"]
    grandchild = int((tmp_path / "child.pid").read_text())
    assert os.getpgid(grandchild) == pgid

    await executor.cancel(handle)

    status = await wait_for(executor, handle)
    assert status.state is JobState.CANCELLED
    assert status.reason == "cancelled by stamen"
    assert wait_gone(pgid), "a process of the cancelled step's group survived"
    assert runner_done_with(handle), "the runner kept a process of the step after writing its status"
    await executor.cancel(handle)  # idempotent: a finished job is left alone
    assert (await wait_for(executor, handle)).state is JobState.CANCELLED


async def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    code = (
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path('ready').write_text('1')\n"
        "time.sleep(120)\n"
    )
    handle = await executor.submit(python_step(tmp_path, code))
    running = await wait_until_running(executor, handle, tmp_path / "ready")
    started = time.monotonic()
    await executor.cancel(handle)
    status = await wait_for(executor, handle)
    assert status.state is JobState.CANCELLED
    assert status.signal == signal.SIGKILL
    assert time.monotonic() - started >= GRACE_SECONDS * 0.9  # SIGTERM first, SIGKILL after the grace
    assert wait_gone(running["command_pgid"])


async def test_command_killed_from_outside_fails_with_its_signal(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    code = "import os, time, pathlib; pathlib.Path('ready').write_text(str(os.getpid())); time.sleep(120)"
    handle = await executor.submit(python_step(tmp_path, code))
    await wait_until_running(executor, handle, tmp_path / "ready")
    os.kill(int((tmp_path / "ready").read_text()), signal.SIGKILL)
    status = await wait_for(executor, handle)
    assert status.state is JobState.FAILED
    assert status.signal == signal.SIGKILL and status.exit_code is None
    assert "killed by SIGKILL (signal 9) from outside stamen" in status.reason


async def test_time_limit_gives_timeout(executor: LocalExecutor, tmp_path: Path) -> None:
    started = time.monotonic()
    handle = await executor.submit(
        python_step(tmp_path, "import time; time.sleep(120)", time_limit_seconds=1)
    )
    status = await wait_for(executor, handle)
    assert status.state is JobState.TIMEOUT
    assert "time limit" in status.reason and "1s" in status.reason
    assert status.signal == signal.SIGTERM  # it stopped on SIGTERM, within the grace period
    assert 1.0 <= time.monotonic() - started < 10


async def test_memory_limit_gives_out_of_memory(executor: LocalExecutor, tmp_path: Path) -> None:
    code = "import time\nblocks = [bytearray(16 * 1024 * 1024) for _ in range(16)]\ntime.sleep(120)\n"
    handle = await executor.submit(python_step(tmp_path, code, memory_mb=100))
    status = await wait_for(executor, handle)
    assert status.state is JobState.OUT_OF_MEMORY
    assert "out of memory" in status.reason and "limit of 100 MB" in status.reason
    assert status.signal == signal.SIGKILL


async def test_another_process_polls_and_cancels_a_job_it_did_not_start(tmp_path: Path) -> None:
    """The scheduler restarted: a LocalExecutor in another process gets only the stored handle."""
    first = LocalExecutor(grace_seconds=GRACE_SECONDS)
    handle = await first.submit(python_step(tmp_path, SLEEPER_WITH_CHILD))
    running = await wait_until_running(first, handle, tmp_path / "ready")
    stored = handle.model_dump_json()

    other_process = (
        "import asyncio, sys\n"
        "from stamen.executors.base import JobHandle\n"
        "from stamen.executors.local import LocalExecutor\n"
        "async def main() -> None:\n"
        "    handle = JobHandle.model_validate_json(sys.argv[1])\n"
        "    executor = LocalExecutor(grace_seconds=1.0)\n"
        "    before = (await executor.poll([handle]))[handle.job_id].state\n"
        "    await executor.cancel(handle)\n"
        "    after = (await executor.poll([handle]))[handle.job_id].state\n"
        "    print(before.value, after.value)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", other_process, stored], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.split() == ["running", "cancelled"], result.stderr
    assert wait_gone(running["command_pgid"])
    # A third instance, in this process, agrees.
    status = await wait_for(LocalExecutor(), JobHandle.model_validate_json(stored))
    assert status.state is JobState.CANCELLED


async def test_runner_killed_with_sigkill_is_lost(executor: LocalExecutor, tmp_path: Path) -> None:
    handle = await executor.submit(python_step(tmp_path, SLEEPER_WITH_CHILD))
    running = await wait_until_running(executor, handle, tmp_path / "ready")
    os.kill(runner_pid(handle), signal.SIGKILL)
    status = await wait_for(LocalExecutor(), handle)  # a fresh instance: it cannot know what happened
    assert status.state is JobState.LOST
    assert status.reason.startswith(LOST_REASON)
    # A lost job does not keep running: the command group is gone too.
    assert wait_gone(running["command_pgid"])


async def test_poll_many_handles_in_one_call(executor: LocalExecutor, tmp_path: Path) -> None:
    handles = [
        await executor.submit(
            # Three worksets' steps at once: one workset's steps run one after another (they may share a
            # runner, whose pid is the job id).
            python_step(tmp_path / str(i), f"import sys; sys.exit({i})", step=f"s{i}").model_copy(
                update={"workset_id": f"ws-{i}"}
            )
        )
        for i in range(3)
    ]
    for handle in handles:
        await wait_for(executor, handle)
    statuses = await executor.poll(handles)
    assert {job_id: s.exit_code for job_id, s in statuses.items()} == {
        h.job_id: i for i, h in enumerate(handles)
    }


async def test_pid_reuse_is_detected(executor: LocalExecutor, tmp_path: Path) -> None:
    """A handle whose pid now belongs to another process (another start time) is not that process."""
    alive_pid = os.getpid()  # certainly alive, but not a runner started at tick 1
    real_start_time = start_time_of(alive_pid)
    assert process_is_alive(alive_pid, real_start_time)
    stale = JobHandle(
        executor="local", cluster="local", job_id=str(alive_pid), workset_id="w", attempt=1, step="old",
        workdir=str(tmp_path), submitted_at=datetime.now(UTC), extra={"runner_start_time": "1"},
    )  # fmt: skip
    status = (await executor.poll([stale]))[stale.job_id]
    assert status.state is JobState.LOST
    await executor.cancel(stale)  # nothing to signal: this process must survive
    assert process_is_alive(alive_pid, real_start_time)


# --- find: the job of one submission, for a scheduler that died before storing its handle ---------


async def test_find_returns_the_handle_submit_returned_and_nothing_for_other_submissions(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    first = python_step(tmp_path, "print('attempt 1')", step="align")
    assert await executor.find(first) is None  # nothing was ever started here

    handle = await executor.submit(first)
    assert await LocalExecutor().find(first) == handle  # another instance: what submit returned
    assert await executor.find(first.model_copy(update={"attempt": 2})) is None  # not another attempt's
    assert await executor.find(first.model_copy(update={"step": "sort"})) is None
    assert await executor.find(first.model_copy(update={"workset_id": "ws-other"})) is None

    assert (await wait_for(executor, handle)).state is JobState.SUCCEEDED
    assert await executor.find(first) == handle  # an ended job is found too: poll tells how it ended

    # The workdir is kept across attempts: the next attempt's runner is found, the earlier one no more.
    second = first.model_copy(update={"attempt": 2, "argv": [sys.executable, "-c", "print('attempt 2')"]})
    assert await executor.find(second) is None
    second_handle = await executor.submit(second)
    assert await executor.find(second) == second_handle
    assert await executor.find(first) is None
    assert (await wait_for(executor, second_handle)).state is JobState.SUCCEEDED


async def test_the_runner_writes_its_job_file_itself(tmp_path: Path) -> None:
    """The submitter died right after starting the runner, before writing anything: still found."""
    step = python_step(tmp_path, "print('found')", step="qc")
    files = {name: tmp_path / f"qc.{suffix}" for name, suffix in
             (("status", "status.json"), ("job", "job.json"))}  # fmt: skip
    runner = subprocess.Popen(
        [sys.executable, "-m", "stamen.executors.local_runner", "--workdir", str(tmp_path),
         "--status-file", str(files["status"]), "--job-file", str(files["job"]),
         f"--workset-id={step.workset_id}", f"--attempt={step.attempt}", f"--step={step.step}",
         "--submitted-at=2030-01-02T03:04:05+00:00", "--", *step.argv],
        start_new_session=True,
    )  # fmt: skip
    try:
        assert runner.wait(timeout=30) == 0
        handle = await LocalExecutor().find(step)
        assert handle is not None
        assert handle.job_id == str(runner.pid) and handle.attempt == 1 and handle.step == "qc"
        assert handle.submitted_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert handle.extra["boot_id"] == boot_id() != ""
        status = (await LocalExecutor().poll([handle]))[handle.job_id]
        assert status.state is JobState.SUCCEEDED, status
        assert await LocalExecutor().find(step.model_copy(update={"attempt": 2})) is None
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


async def test_a_job_file_naming_a_recycled_pid_is_not_taken_for_a_live_runner(tmp_path: Path) -> None:
    step = python_step(tmp_path, "print('never')", step="old")
    me = os.getpid()  # alive, but not the runner that started at tick 1
    (tmp_path / "old.job.json").write_text(json.dumps({
        "version": 1, "workset_id": step.workset_id, "attempt": 1, "step": "old",
        "submitted_at": "2030-01-02T03:04:05+00:00", "runner_pid": me, "runner_start_time": "1",
        "boot_id": "",
    }))  # fmt: skip
    executor = LocalExecutor()
    handle = await executor.find(step)
    assert handle is not None and handle.job_id == str(me)
    # The runner was started (so the step is not submitted again) and has vanished: LOST, not RUNNING.
    assert (await executor.poll([handle]))[handle.job_id].state is JobState.LOST
    assert process_is_alive(me, start_time_of(me))


async def test_a_job_file_that_names_the_submission_but_no_runner_is_an_error(tmp_path: Path) -> None:
    step = python_step(tmp_path, "print('never')", step="broken")
    (tmp_path / "broken.job.json").write_text(
        json.dumps({"workset_id": step.workset_id, "attempt": 1, "step": "broken", "runner_pid": "x"})
    )
    # "Cannot tell" must not read as "not found": that would submit the step a second time.
    with pytest.raises(ValueError, match="not a valid runner_pid"):
        await LocalExecutor().find(step)


async def test_cancel_signals_no_process_group_that_is_not_the_jobs_any_more(
    executor: LocalExecutor, tmp_path: Path
) -> None:
    """The job record names the command's group by number; by the time `cancel` signals it, the
    command may have ended and the number been taken by another group. Only the group whose leader is
    the process the runner started (its start time) is signalled, or one whose leader has gone but
    whose members remain (a group's number is not reused while it has members)."""
    handle = await executor.submit(python_step(tmp_path, "pass"))
    await wait_for(executor, handle)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a group that took the number
    try:
        deadline = time.monotonic() + 20
        while (fields := proc_stat_fields(other.pid)) is None or fields[0] != "S":  # asleep, signals seen
            assert time.monotonic() < deadline, fields
            await asyncio.sleep(0.01)
        running = {"command_pgid": other.pid, "command_start_time": "1", "started_at": "2026-12-06T00:00:00"}
        job_line = (tmp_path / "step.job.json").read_text().splitlines()[0]
        (tmp_path / "step.job.json").write_text(f"{job_line}\n{json.dumps({'running': running})}\n")
        files = executor._files(handle)
        for signum in (signal.SIGTERM, signal.SIGKILL):  # cancel's first signal, and after its timeout
            await asyncio.to_thread(executor._signal_job, handle, files, signum, False)
            # A signal sent is pending (or the process is ending) once kill() has returned.
            fields = proc_stat_fields(other.pid)
            assert fields is not None and fields[0] == "S" and not signals_pending(other.pid), fields
        running["command_start_time"] = start_time_of(other.pid)  # the job's own group: signalled
        (tmp_path / "step.job.json").write_text(f"{job_line}\n{json.dumps({'running': running})}\n")
        await asyncio.to_thread(executor._signal_job, handle, files, signal.SIGTERM, False)
        assert other.wait(20) == -signal.SIGTERM
    finally:
        other.kill()
        other.wait()


def test_a_job_records_lines_count_once_whole_and_its_first_status_is_the_outcome(tmp_path: Path) -> None:
    """A reader can meet the job file while a line is being appended: a line without its newline yet is
    not taken (half a status would read as none, or worse); of two status lines (the runner's, and
    `cancel`'s for a runner that did not stop) the first is the outcome. A version 1 job file (the
    standalone runner's, one line without a newline) is read as its job."""
    job_file = tmp_path / "s.job.json"
    job = {"version": 2, "workset_id": "ws", "attempt": 1, "step": "s"}
    status = json.dumps({"status": {"exit_code": 0}})
    job_file.write_text(
        json.dumps(job) + "\n" + json.dumps({"running": {"command_pgid": 7}}) + "\n" + status[:-5]
    )
    record = read_job_record(job_file)
    assert record is not None and record.job == job and record.appended
    assert record.running == {"command_pgid": 7} and record.status is None
    job_file.write_text(
        job_file.read_text() + status[-5:] + "\n" + json.dumps({"status": {"exit_code": 1}}) + "\n"
    )
    record = read_job_record(job_file)
    assert record is not None and record.status == {"exit_code": 0}
    job_file.write_text(json.dumps({**job, "version": 1}))
    record = read_job_record(job_file)
    assert record is not None and record.job["version"] == 1 and not record.appended
    assert record.running is None and record.status is None
    job_file.write_text("{not json")
    assert read_job_record(job_file) is None and read_job_record(tmp_path / "missing.job.json") is None


async def test_a_command_is_found_on_the_steps_path_wherever_that_path_comes_from(
    executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the runner's own PATH the C library finds the command (`posix_spawnp`); a step with a PATH of
    its own, or a PATH the submitting process changed after its fork server started, is searched as
    that PATH says, relative entries from the workdir."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("from-step-path", "from-changed-path"):
        (tools / name).write_text(f"#!/bin/sh\necho {name}\n")
        (tools / name).chmod(0o755)
    plain = await executor.submit(StepSpec(workset_id="ws", attempt=1, step="plain", argv=["echo", "plain"],
                                           workdir=str(tmp_path / "a")))  # fmt: skip
    assert (await wait_for(executor, plain)).state is JobState.SUCCEEDED  # the fork server runs from here on
    own = StepSpec(workset_id="ws", attempt=1, step="own", argv=["from-step-path"], workdir=str(tmp_path / "b"),
                   env={"PATH": f"{tools}:{os.environ['PATH']}"})  # fmt: skip
    relative = StepSpec(workset_id="ws", attempt=1, step="relative", argv=["from-step-path"],
                        workdir=str(tmp_path), env={"PATH": f"tools:{os.environ['PATH']}"})  # fmt: skip
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    changed = StepSpec(workset_id="ws", attempt=1, step="changed", argv=["from-changed-path"],
                       workdir=str(tmp_path / "c"))  # fmt: skip
    for spec, out in ((own, "from-step-path"), (relative, "from-step-path"), (changed, "from-changed-path")):
        status = await wait_for(executor, await executor.submit(spec))
        assert status.state is JobState.SUCCEEDED, status
        assert (Path(spec.workdir) / f"{spec.step}.stdout.log").read_text() == out + "\n"
    assert (tmp_path / "a" / "plain.stdout.log").read_text() == "plain\n"


def test_a_log_tail_is_the_last_lines_of_the_files_end(tmp_path: Path) -> None:
    log = tmp_path / "s.stderr.log"
    assert tail(log) == ""  # missing
    log.write_bytes(b"")
    assert tail(log) == ""
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(20000)))  # more than LOG_TAIL_BYTES
    assert tail(log, 3) == "line 19997\nline 19998\nline 19999"
    assert tail(log).splitlines() == [f"line {i}" for i in range(19950, 20000)]
