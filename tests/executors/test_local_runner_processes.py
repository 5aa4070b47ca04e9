"""How local steps are started and noticed: runners forked by the fork server, their end noticed at
once (pidfd), no zombies left behind, and runners that outlive the process that submitted them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobState, JobStatus
from stamen.executors.local import LocalExecutor, runner_pid
from stamen.executors.local_files import StepFiles, read_job_record, write_json_atomically
from stamen.executors.local_forkserver import _Runner, _Runners
from stamen.executors.local_forkserver_client import ForkServer, ForkServerError, fork_server
from stamen.executors.local_proc import group_is_alive, proc_stat_fields
from stamen.executors.local_runner_config import RunnerConfig, Submission


def step(workdir: Path, argv: list[str], name: str = "s") -> StepSpec:
    return StepSpec(workset_id="ws-proc", attempt=1, step=name, argv=argv, workdir=str(workdir))


def recorded(job_file: str | Path) -> bool:
    """The job's status is in its job file (a runner of the fork server appends it there)."""
    record = read_job_record(job_file)
    return record is not None and record.status is not None


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is `pid`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := proc_stat_fields(int(entry.name))) and int(fields[1]) == pid:
            found.append((int(entry.name), fields[0]))
    return found


async def test_the_end_of_a_step_is_reported_when_it_ends_not_at_a_poll(tmp_path: Path) -> None:
    executor = LocalExecutor()
    ended = asyncio.Event()
    executor.on_job_exit(ended.set)
    handle = await executor.submit(step(tmp_path, ["sleep", "0.3"]))
    assert (await executor.poll([handle]))[handle.job_id].state in (JobState.PENDING, JobState.RUNNING)
    ended.clear()
    started = time.monotonic()
    await asyncio.wait_for(ended.wait(), timeout=20)  # nobody polls meanwhile
    assert time.monotonic() - started < 15
    assert (await executor.poll([handle]))[handle.job_id].state is JobState.SUCCEEDED


async def test_a_waiting_runner_that_ends_wakes_nobody_but_a_runner_killed_mid_step_does(
    tmp_path: Path,
) -> None:
    """A runner that announced its step's end and then ends while waiting (told to, or idle too long)
    tells nothing new: its exit must not wake the scheduler for a poll of nothing (one step a
    workset: a second wake-up per step). A runner killed mid-step has announced nothing: its exit is
    told."""
    # A fork server of its own (the process's one is keyed by the interpreter's path): a runner another
    # test left in this worker process, ending meanwhile, would otherwise tell its end to this test too.
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    executor = LocalExecutor(python=str(python))
    wakes: list[int] = []
    executor.on_job_exit(lambda: wakes.append(1))
    deadline = time.monotonic() + 20

    async def until_unwatched(pid: int) -> None:  # its exit has been handled by the executor
        while pid in executor._exits._watched:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    done = await executor.submit(step(tmp_path / "a", ["true"]).model_copy(update={"workset_id": "ws-a"}))
    while not (await executor.poll([done]))[done.job_id].state.finished:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    while not wakes:  # the notice of the step's end
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    woken = len(wakes)
    os.kill(runner_pid(done), signal.SIGTERM)  # waiting between steps: it ends
    await until_unwatched(runner_pid(done))
    assert len(wakes) == woken

    busy = await executor.submit(
        step(tmp_path / "b", ["sleep", "30"]).model_copy(update={"workset_id": "ws-b"})
    )
    woken = len(wakes)
    os.kill(runner_pid(busy), signal.SIGKILL)
    await until_unwatched(runner_pid(busy))
    assert len(wakes) == woken + 1
    assert (await executor.poll([busy]))[busy.job_id].state is JobState.LOST
    fork_server(str(python)).stop()


async def test_runners_come_from_the_fork_server_and_leave_no_zombies(tmp_path: Path) -> None:
    executor = LocalExecutor()
    # Five worksets' steps one after another (a runner idle by then takes the next).
    handles = [
        await executor.submit(step(tmp_path / str(i), ["true"]).model_copy(update={"workset_id": f"ws-{i}"}))
        for i in range(5)
    ]
    server = fork_server()
    assert server.pid is not None and server.pid != os.getpid()
    runners = {runner_pid(h) for h in handles}
    deadline = time.monotonic() + 20
    while True:
        statuses = await executor.poll(handles)
        if all(s.state.finished for s in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.05)
    assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
    assert runners <= {pid for pid, _ in children_of(server.pid)}  # waiting for other steps
    for pid in runners:  # a runner between steps told to stop ends, and the fork server reaps it
        os.kill(pid, signal.SIGTERM)
    while left := [(pid, state) for pid, state in children_of(server.pid) if pid in runners]:
        assert time.monotonic() < deadline, f"runners or zombies left: {left}"
        await asyncio.sleep(0.05)
    assert not [pid for pid, state in children_of(os.getpid()) if state == "Z"]


async def test_the_fork_server_loads_only_what_its_runners_need(tmp_path: Path) -> None:
    """Every page of the fork server is copied into each runner's page tables and torn down when it
    ends: it runs without `site` and loads no module a runner does not use (shutil brought the bz2,
    lzma and zlib libraries). Its steps still run, with the submitting process's environment."""
    executor = LocalExecutor()
    handle = await executor.submit(step(tmp_path, ["sh", "-c", 'echo "$PYTHONPATH"']))
    server = fork_server()
    assert server.pid is not None
    with open(f"/proc/{server.pid}/maps", encoding="utf-8") as maps:
        libraries = {line.rsplit("/", 1)[-1].split(".", 1)[0] for line in maps if "/" in line}
    assert not libraries & {"_bz2", "_lzma", "zlib"}, libraries
    with open(f"/proc/{server.pid}/cmdline", encoding="utf-8") as cmdline:
        assert cmdline.read().split("\0")[1:3] == ["-I", "-S"]
    deadline = time.monotonic() + 20
    while not (status := (await executor.poll([handle]))[handle.job_id]).state.finished:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    assert status.state is JobState.SUCCEEDED, status
    assert (tmp_path / "s.stdout.log").read_text() == os.environ.get("PYTHONPATH", "") + "\n"


SUBMIT_AND_EXIT = """
import asyncio, sys
from stamen.domain.steps import StepSpec
from stamen.executors.local import LocalExecutor, runner_pid
from stamen.executors.local_forkserver_client import fork_server
async def main() -> None:
    handle = await LocalExecutor().submit(StepSpec(workset_id="ws-gone", attempt=1, step="s",
        argv=["sh", "-c", "sleep 1; echo done"], workdir=sys.argv[1]))
    print(handle.model_dump_json())
    print(fork_server().pid)
asyncio.run(main())
"""


async def test_a_step_outlives_the_process_that_submitted_it_and_its_fork_server(tmp_path: Path) -> None:
    """The scheduler process ends (here: exits at once after submitting): the fork server goes with it,
    the runner finishes the step and records it, and another process reads the outcome."""
    result = subprocess.run(
        [sys.executable, "-c", SUBMIT_AND_EXIT, str(tmp_path)], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    lines = result.stdout.split()
    handle, server_pid = JobHandle.model_validate_json(lines[0]), int(lines[1])
    executor = LocalExecutor()
    deadline = time.monotonic() + 30
    while not (status := (await executor.poll([handle]))[handle.job_id]).state.finished:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert status.state is JobState.SUCCEEDED, status
    assert (tmp_path / "s.stdout.log").read_text() == "done\n"
    assert await executor.find(step(tmp_path, ["sh"]).model_copy(update={"workset_id": "ws-gone"})) == handle
    deadline = time.monotonic() + 10
    while (fields := proc_stat_fields(server_pid)) is not None and fields[0] not in ("Z", "X"):
        assert time.monotonic() < deadline, "the fork server outlived the process that started it"
        await asyncio.sleep(0.05)


async def test_a_runner_that_cannot_record_its_job_runs_nothing_and_says_why(tmp_path: Path) -> None:
    """The runner writes its job file before anything else: if it cannot, the command never starts,
    the submission fails with the error, its traceback is in the runner log (which a runner that did
    not fail never creates), and the fork server goes on serving."""
    workdir = tmp_path / "w"
    workdir.mkdir()

    def config(step_name: str, job_file: Path) -> RunnerConfig:
        files = StepFiles.of(workdir, step_name)
        return RunnerConfig(
            argv=["touch", f"{step_name}.ran"], workdir=str(workdir), status_file=files.status_file,
            running_file=files.running_file, stdout_file=files.stdout_file, stderr_file=files.stderr_file,
            cancel_marker=files.cancel_marker, job_file=str(job_file),
            submission=Submission("ws-proc", 1, step_name, "2026-12-06T00:00:00+00:00"), env=dict(os.environ),
        )  # fmt: skip

    server = fork_server()
    failing = config("a", tmp_path / "missing" / "a.job.json")
    with pytest.raises(ForkServerError, match="before it wrote its job file"):
        await asyncio.to_thread(server.start_runner, failing, StepFiles.of(workdir, "a").runner_log)
    assert "FileNotFoundError" in Path(StepFiles.of(workdir, "a").runner_log).read_text()

    working = config("b", workdir / "b.job.json")
    await asyncio.to_thread(server.start_runner, working, StepFiles.of(workdir, "b").runner_log)
    deadline = time.monotonic() + 20
    while not recorded(workdir / "b.job.json"):
        assert time.monotonic() < deadline, "the second runner did not finish"
        await asyncio.sleep(0.05)
    assert (workdir / "b.ran").exists() and not (workdir / "a.ran").exists()
    assert not Path(StepFiles.of(workdir, "b").runner_log).exists()


async def test_a_finished_step_leaves_its_job_file_and_output_files_and_nothing_else(
    tmp_path: Path,
) -> None:
    """The command's start and the status are appended to the job file (no file is created for them);
    no runner log unless the runner failed, no temporary left behind."""
    executor = LocalExecutor()
    handle = await executor.submit(step(tmp_path, ["true"]))
    deadline = time.monotonic() + 20
    while not (status := (await executor.poll([handle]))[handle.job_id]).state.finished:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    assert status.state is JobState.SUCCEEDED
    assert sorted(os.listdir(tmp_path)) == ["s.job.json", "s.stderr.log", "s.stdout.log"]
    lines = [json.loads(line) for line in (tmp_path / "s.job.json").read_text().splitlines()]
    assert [sorted(line) if i else line["job_id"] for i, line in enumerate(lines)] == [
        handle.job_id,
        ["running"],
        ["status"],
    ]
    assert lines[1]["running"]["command_pgid"] == lines[2]["status"]["command_pid"]
    assert lines[2]["status"]["exit_code"] == 0


async def wait_finished(executor: LocalExecutor, handle: JobHandle) -> JobStatus:
    deadline = time.monotonic() + 20
    while not (status := (await executor.poll([handle]))[handle.job_id]).state.finished:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    return status


def wait_idle(runner: int) -> None:
    """Until `runner` has no child and sleeps: it has said "idle" and waits for its next step."""
    deadline = time.monotonic() + 20
    while (fields := proc_stat_fields(runner)) is None or fields[0] != "S" or children_of(runner):
        assert fields is not None and fields[0] not in ("Z", "X"), f"runner {runner} has ended"
        assert time.monotonic() < deadline, f"runner {runner}: {fields}"
        time.sleep(0.01)


def signals_pending(pid: int) -> bool:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        masks = dict(line.split(":", 1) for line in status if line.startswith(("SigPnd", "ShdPnd")))
    return any(int(mask, 16) for mask in masks.values())


async def test_a_runner_runs_another_worksets_step_and_keeps_nothing_of_the_last(tmp_path: Path) -> None:
    """A runner that has finished a step runs the next step submitted, whichever workset (tenant) it is
    of (a fresh fork would copy its pages again). Each job has its own id (two jobs of one runner can
    be active in the scheduler's books at once: a workset's last step not yet recorded, another's first
    submitted), its own files and its own resources (not the runner's sum); the second tenant's command
    gets its own environment and working directory and inherits no descriptor but its stdio."""
    executor = LocalExecutor()
    busy = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec 7>kept-open; cd /"
    first = await executor.submit(
        StepSpec(workset_id="ws-tenant-a", attempt=1, step="a", argv=["sh", "-c", busy],
                 workdir=str(tmp_path / "a"), env={"TENANT_A_SECRET": "a-only"})
    )  # fmt: skip
    first_status = await wait_finished(executor, first)
    wait_idle(runner_pid(first))
    look = 'echo "${TENANT_A_SECRET-unset}"; pwd; ls /proc/$$/fd'
    second = await executor.submit(
        StepSpec(workset_id="ws-tenant-b", attempt=1, step="b", argv=["sh", "-c", look],
                 workdir=str(tmp_path / "b"))
    )  # fmt: skip
    second_status = await wait_finished(executor, second)

    assert runner_pid(second) == runner_pid(first)
    assert second.extra["runner_start_time"] == first.extra["runner_start_time"]
    pid, _, job = first.job_id.partition(".")
    assert second.job_id == f"{pid}.{int(job) + 1}"
    both = await executor.poll([first, second])
    assert {job_id: s.handle.workset_id for job_id, s in both.items()} == {
        first.job_id: "ws-tenant-a", second.job_id: "ws-tenant-b",
    }  # fmt: skip
    assert first_status.state is second_status.state is JobState.SUCCEEDED, second_status
    assert (tmp_path / "b" / "b.stdout.log").read_text() == f"unset\n{tmp_path / 'b'}\n0\n1\n2\n"
    assert await executor.find(step(tmp_path / "a", ["sh"], name="a").model_copy(
        update={"workset_id": "ws-tenant-a"})) == first  # fmt: skip
    assert await executor.find(step(tmp_path / "b", ["sh"], name="b").model_copy(
        update={"workset_id": "ws-tenant-b"})) == second  # fmt: skip
    assert first_status.resources.cpu_seconds and second_status.resources.cpu_seconds is not None
    assert second_status.resources.cpu_seconds < first_status.resources.cpu_seconds / 2


def wait_idle_or_gone(runner: int) -> bool:
    """Until `runner` waits for another step (True) or has ended (False)."""
    deadline = time.monotonic() + 20
    while True:
        fields = proc_stat_fields(runner)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        if fields[0] == "S" and not children_of(runner):
            return True
        assert time.monotonic() < deadline, f"runner {runner}: {fields}"
        time.sleep(0.01)


async def test_a_cancel_that_times_out_cannot_kill_another_worksets_step(tmp_path: Path) -> None:
    """`cancel` writes the step's cancel marker, signals, waits, looks at the status once more and, still
    missing, SIGKILLs the runner. If the step ends by itself between that last look and the kill, its
    runner must not have taken another workset's step, which the kill would take down: a runner whose
    job's marker is there once the job's status is written takes no other job. (Reproduced here: the
    step ends after the marker is written and before the kill; a runner that went on to the next step
    submitted had it killed, and LOST.)"""
    executor = LocalExecutor(grace_seconds=1.0)
    release_a, release_b = tmp_path / "release-a", tmp_path / "release-b"
    wait_for = "while [ ! -e {} ]; do sleep 0.01; done"
    a = await executor.submit(
        StepSpec(workset_id="ws-a", attempt=1, step="a", argv=["sh", "-c", wait_for.format(release_a)],
                 workdir=str(tmp_path / "a"))
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while (await executor.poll([a]))[a.job_id].state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    files_a = StepFiles.of(tmp_path / "a", "a").as_dict()
    write_json_atomically(files_a["cancel_marker"], {"requested_at": "now"})  # cancel(a)'s first act
    release_a.touch()  # the step ends by itself before any signal of the cancel reaches it
    assert (await wait_finished(executor, a)).state is JobState.SUCCEEDED
    reused = wait_idle_or_gone(runner_pid(a))

    b = await executor.submit(
        StepSpec(workset_id="ws-b", attempt=1, step="b", argv=["sh", "-c", wait_for.format(release_b)],
                 workdir=str(tmp_path / "b"))
    )  # fmt: skip
    # What cancel(a) does when its wait has timed out (the status missing at its last look).
    await asyncio.to_thread(executor._signal_job, a, files_a, signal.SIGKILL, False)
    release_b.touch()
    status_b = await wait_finished(executor, b)
    assert status_b.state is JobState.SUCCEEDED, status_b
    assert not reused and runner_pid(b) != runner_pid(a)


async def test_a_hung_runners_cancel_kills_it_and_its_command(tmp_path: Path) -> None:
    """A runner that does not stop its step within the grace period (here: stopped) is killed by
    `cancel`, with its command group, and the step is recorded cancelled."""
    executor = LocalExecutor(grace_seconds=0.2)
    handle = await executor.submit(step(tmp_path, ["sleep", "60"]))
    deadline = time.monotonic() + 20
    while (await executor.poll([handle]))[handle.job_id].state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    record = read_job_record(tmp_path / "s.job.json")
    assert record is not None and record.running is not None, record
    running = record.running
    os.kill(runner_pid(handle), signal.SIGSTOP)
    await executor.cancel(handle)
    status = await wait_finished(executor, handle)
    assert status.state is JobState.CANCELLED and "did not stop in time" in status.reason, status
    while group_is_alive(running["command_pgid"]) or (
        (fields := proc_stat_fields(runner_pid(handle))) is not None and fields[0] not in ("Z", "X")
    ):
        assert time.monotonic() < deadline, "the runner or its command survived the cancel"
        await asyncio.sleep(0.02)


async def test_a_late_cancel_of_a_finished_step_does_not_touch_the_runners_next_step(tmp_path: Path) -> None:
    """`cancel` checks that the job has not ended, then signals its runner: in between the runner may have
    finished it and taken another step. What it sends only has the runner look at the cancel marker of
    the step it runs now, so that step goes on; the step's own cancel still stops it."""
    executor = LocalExecutor(grace_seconds=1.0)
    first = await executor.submit(step(tmp_path / "a", ["true"], name="a"))
    await wait_finished(executor, first)
    wait_idle(runner_pid(first))
    second = await executor.submit(step(tmp_path / "b", ["sleep", "60"], name="b"))
    assert runner_pid(second) == runner_pid(first)
    deadline = time.monotonic() + 20
    while (await executor.poll([second]))[second.job_id].state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)

    # What cancel(first) does once it has found the first step's status missing (a moment earlier).
    files = StepFiles.of(tmp_path / "a", "a").as_dict()
    await asyncio.to_thread(executor._signal_job, first, files, signal.SIGTERM, True)
    while signals_pending(runner_pid(first)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    runner = proc_stat_fields(runner_pid(first))
    assert runner is not None and runner[0] != "Z"
    assert (await executor.poll([second]))[second.job_id].state is JobState.RUNNING
    assert (await executor.poll([first]))[first.job_id].state is JobState.SUCCEEDED

    await executor.cancel(second)
    status = await wait_finished(executor, second)
    assert status.state is JobState.CANCELLED and status.reason == "cancelled by stamen", status


async def test_a_runner_told_to_stop_mid_step_stops_it_and_takes_no_other(tmp_path: Path) -> None:
    """A SIGTERM from outside stamen to a runner cancels its step and ends the runner after it: it was
    told to stop, not to go on with somebody else's step."""
    executor = LocalExecutor(grace_seconds=1.0)
    handle = await executor.submit(step(tmp_path, ["sleep", "60"]))
    await until(lambda: (r := read_job_record(tmp_path / "s.job.json")) is not None and r.running is not None)
    os.kill(runner_pid(handle), signal.SIGTERM)
    status = await wait_finished(executor, handle)
    assert status.state is JobState.CANCELLED and "from outside stamen" in status.reason, status
    assert not wait_idle_or_gone(runner_pid(handle))


async def test_idle_runners_are_bounded_and_end_after_a_while(tmp_path: Path) -> None:
    """At most `max_idle_runners` runners are kept when a step is given out (the others end), and a
    runner that waits `idle_runner_seconds` for a step ends: an idle stack keeps no process."""
    server = ForkServer(sys.executable, idle_runner_seconds=1.0, max_idle_runners=1)
    try:
        configs = [runner_config(tmp_path / str(i), f"ws-{i}", ["true"]) for i in range(3)]
        jobs = [await asyncio.to_thread(server.start_runner, c, c.stdout_file + ".log") for c in configs]
        for config in configs:
            await until(lambda config=config: recorded(config.job_file or ""))
        assert server.pid is not None
        release = tmp_path / "release"
        last = runner_config(
            tmp_path / "3", "ws-3", ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.01; done"]
        )
        job = await asyncio.to_thread(server.start_runner, last, last.stdout_file + ".log")
        assert job.pid in {j.pid for j in jobs} and job.job > 1  # a runner used again
        await until(lambda: {pid for pid, _ in children_of(server.pid or 0)} == {job.pid})  # no others kept
        release.touch()
        await until(lambda: recorded(last.job_file or ""))
        await until(lambda: not children_of(server.pid or 0))  # it ended by itself, reaped
    finally:
        server.stop()


def runner_config(workdir: Path, workset: str, argv: list[str]) -> RunnerConfig:
    workdir.mkdir()
    files = StepFiles.of(workdir, "s")
    return RunnerConfig(
        argv=argv, workdir=str(workdir), status_file=files.status_file, running_file=files.running_file,
        stdout_file=files.stdout_file, stderr_file=files.stderr_file, cancel_marker=files.cancel_marker,
        job_file=files.job_file, submission=Submission(workset, 1, "s", "2026-12-06T00:00:00+00:00"),
        env=dict(os.environ),
    )  # fmt: skip


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "not before the deadline"
        await asyncio.sleep(0.02)


def test_a_runner_whose_idle_came_with_its_reply_is_given_the_next_step() -> None:
    """A short step can end before the fork server reads the runner's reply: "<start time> <n>" and "idle"
    then come in one read, and the runner's pipe reads as empty afterwards. It is idle all the same (it
    was left busy, and the next steps forked runners: 17 of 300 one-step worksets under load)."""
    runners = _Runners(notices=None, idle_seconds=30.0, max_idle=16)
    replies_read, replies_write = os.pipe()
    requests_read, requests_write = os.pipe()
    try:
        runner = _Runner(pid=os.getpid(), requests=requests_write, replies=replies_read)
        os.write(replies_write, b"12345 1\nidle\n")
        assert runners._reply(runner) == b"12345 1"
        runners.busy[runner.replies] = runner
        runners.collect_idle()
        assert runners.idle == [runner] and not runners.busy
    finally:
        for fd in (replies_read, replies_write, requests_read, requests_write):
            os.close(fd)


def test_a_request_carries_only_what_differs_from_the_fork_servers_environment() -> None:
    """The fork server knows the environment it was started with; a request tells the step's variables
    and what the submitting process's environment changed since (not the whole of it, ~1.5 kB a step
    here), and the runner makes the command's whole environment again: set, changed, removed, and a
    removed variable the step sets itself."""
    base = {"HOME": "/root", "PATH": "/usr/bin", "GONE": "1", "ALSO_GONE": "2"}
    config = runner_config_without_dirs(env={"SAMPLE": "NA12878", "ALSO_GONE": "set by the step"})
    request = json.loads(
        json.dumps(config.to_request({"PATH": "/opt/bin:/usr/bin", "NEW": "x"}, ["GONE", "ALSO_GONE"]))
    )
    assert request["env"] == {
        "PATH": "/opt/bin:/usr/bin",
        "NEW": "x",
        "SAMPLE": "NA12878",
        "ALSO_GONE": "set by the step",
    }
    assert request["env_removed"] == ["GONE"]
    rebuilt = RunnerConfig.from_request(request, base)
    assert rebuilt.env == {"HOME": "/root", "PATH": "/opt/bin:/usr/bin", "NEW": "x", "SAMPLE": "NA12878",
                           "ALSO_GONE": "set by the step"}  # fmt: skip
    assert rebuilt == RunnerConfig(**{**config.__dict__, "env": rebuilt.env})
    unchanged = config.to_request({}, [])
    assert unchanged["env"] == config.env and unchanged["env_removed"] == []


def runner_config_without_dirs(env: dict[str, str]) -> RunnerConfig:
    files = StepFiles.of("/nowhere", "s")
    return RunnerConfig(
        argv=["true"], workdir="/nowhere", status_file=files.status_file, running_file=files.running_file,
        stdout_file=files.stdout_file, stderr_file=files.stderr_file, cancel_marker=files.cancel_marker,
        job_file=files.job_file, submission=Submission("ws", 1, "s", "2026-12-06T00:00:00+00:00"), env=env,
    )  # fmt: skip


def test_asking_for_this_processs_fork_server_opens_nothing() -> None:
    """`fork_server()` is asked twice a step; it made a ForkServer (and its notice pipe) each time and kept
    the first, leaving two descriptors open per call: 4 a step, EMFILE after ~250 steps under a limit
    of 1024 open files."""
    server = fork_server()
    before = len(os.listdir("/proc/self/fd"))
    assert all(fork_server() is server for _ in range(50))
    assert len(os.listdir("/proc/self/fd")) == before
