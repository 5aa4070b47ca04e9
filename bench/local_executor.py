"""The local executor's own cost per step, beside the command's: CPU, latency, zombies.

    python bench/local_executor.py [--steps 300] [--steps-per-workset 1] [--in-flight 10]
                                   [--poll-seconds 1.0] [--json]

Runs `--steps` steps whose command is `true` through `LocalExecutor` (submit, poll, as the scheduler
does), `--in-flight` at a time; `--steps-per-workset` of them in a row for each workset (a workset's
next step submitted once its last has ended, in the same workdir, as the scheduler does). A step's end is noticed when the executor reports it (`on_job_exit`,
where it can), else at the next poll every `--poll-seconds` (the scheduler's default interval).
Prints:

- overhead CPU per step: all CPU of this process and every process it started (the fork server or the
  runners, and the commands), minus the commands' own CPU (from their status files) and minus the CPU
  this process spends counting zombies (a scan of /proc, ~2 ms a time, which is the bench's, not the
  executor's); and where it goes: this process (submit, poll, the event loop), the fork server itself,
  its runners (their CPU minus the commands');
- submit call: how long `submit` takes (the scheduler's dispatch waits for it);
- exit -> noticed: from the command's end (status file) to this process knowing it (it includes
  waiting for the submits in progress: this loop, like the scheduler's, submits one step at a time);
- the most zombie processes seen at once among this process's descendants;
- runner page faults per step (the minor faults of the fork server's runners, with the commands'
  own: mostly the copies of the pages a runner writes after its fork) and the fork server's resident
  size (what every fork copies the page tables of).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from measure import ProcessTree, bench_process, emit, latency_summary, machine

from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle
from stamen.executors.local import LocalExecutor
from stamen.executors.local_forkserver_client import fork_server
from stamen.executors.local_proc import proc_stat_fields


def cpu_and_faults(pid: int, *, reaped: bool = False) -> tuple[float, int]:
    """From /proc/<pid>/stat: CPU seconds and minor page faults of the process itself, or (`reaped`) of
    the children it has reaped. In clock ticks (10 ms), each figure rounded down."""
    fields = proc_stat_fields(pid)
    if not fields:
        return 0.0, 0
    user, system, faults = (13, 14, 8) if reaped else (11, 12, 7)
    return (int(fields[user]) + int(fields[system])) / os.sysconf("SC_CLK_TCK"), int(fields[faults])


def live_children(pid: int) -> tuple[float, int]:
    """CPU seconds and minor page faults of the live children of `pid`, with those they have reaped."""
    cpu, faults = 0.0, 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := proc_stat_fields(int(entry.name))) and int(fields[1]) == pid:
            for reaped in (False, True):
                c, f = cpu_and_faults(int(entry.name), reaped=reaped)
                cpu, faults = cpu + c, faults + f
    return cpu, faults


def zombies() -> int:
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    count = 0
    for child in children:
        try:
            count += child.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    return count


async def run(args: argparse.Namespace) -> dict[str, Any]:
    executor = LocalExecutor(grace_seconds=1.0)
    woken = asyncio.Event()
    notified = hasattr(executor, "on_job_exit")
    if notified:
        executor.on_job_exit(woken.set)
    with tempfile.TemporaryDirectory(prefix="stamen-bench-") as tmp:
        folder = Path(tmp)
        # One warm-up step: a fork server (where there is one) is started once per process, not per step.
        warm = await executor.submit(StepSpec(workset_id="warm", attempt=1, step="s", argv=["true"],
                                              workdir=str(folder / "warm")))  # fmt: skip
        for _ in range(3000):
            if (await executor.poll([warm]))[warm.job_id].state.finished:
                break
            await asyncio.sleep(0.01)
        me = ProcessTree("bench", os.getpid())
        me.start()
        server = psutil.Process(fork_server().pid)
        server_at_start, own_at_start = server.cpu_times(), time.process_time()
        # What the fork server and its live runners (the warm-up's) have spent before the run, and what
        # this process has reaped so far: the run's share of its reaped children at the end is the rest.
        server_own_at_start, server_reaped_at_start = (
            cpu_and_faults(server.pid),
            cpu_and_faults(server.pid, reaped=True),
        )
        runners_live_at_start = live_children(server.pid)
        reaped_at_start = cpu_and_faults(os.getpid(), reaped=True)
        per = max(1, args.steps_per_workset)

        def step_of(i: int) -> StepSpec:  # the i-th step: step i % per of workset i // per
            return StepSpec(workset_id=f"ws-{i // per}", attempt=1, step=f"s{i % per}", argv=["true"],
                            workdir=str(folder / str(i // per)), last=i % per == per - 1)  # fmt: skip

        pending = [step_of(i) for i in range(0, args.steps, per)]  # each workset's first step
        pending.reverse()
        next_steps: list[StepSpec] = []  # a workset's next step, once its last has ended: first
        running: dict[str, tuple[JobHandle, float]] = {}
        submit_calls: list[float] = []
        submit_to_noticed: list[float] = []
        exit_to_noticed: list[float] = []
        command_cpu = 0.0
        sampling_cpu = 0.0
        most_zombies = 0
        t0 = time.perf_counter()
        while pending or running or next_steps:
            while (pending or next_steps) and len(running) < args.in_flight:
                t_submit = time.perf_counter()
                handle = await executor.submit(next_steps.pop() if next_steps else pending.pop())
                submit_calls.append(time.perf_counter() - t_submit)
                running[handle.job_id] = (handle, time.perf_counter())
            woken.clear()  # before the poll: an exit told while it runs wakes the wait below
            statuses = await executor.poll([h for h, _ in running.values()])
            now_wall, now = time.time(), time.perf_counter()
            for job_id, status in statuses.items():
                if status.state.finished:
                    done, submitted = running.pop(job_id)
                    i = int(done.workset_id.removeprefix("ws-")) * per + int(done.step.removeprefix("s")) + 1
                    if i % per and i < args.steps:
                        next_steps.append(step_of(i))
                    submit_to_noticed.append(now - submitted)
                    if status.ended_at is not None:
                        exit_to_noticed.append(max(0.0, now_wall - status.ended_at.timestamp()))
                    command_cpu += status.resources.cpu_seconds or 0.0
            sampling = time.process_time()
            most_zombies = max(most_zombies, zombies())
            sampling_cpu += time.process_time() - sampling  # the bench's own /proc scan, not the executor's
            if running and not any(s.state.finished for s in statuses.values()):
                try:
                    await asyncio.wait_for(woken.wait(), timeout=args.poll_seconds)
                except TimeoutError:
                    pass
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.2)  # the last runners have ended and been reaped
        server_at_end, own_cpu = server.cpu_times(), time.process_time() - own_at_start
        server_own_at_end = cpu_and_faults(server.pid)
        server_rss_mb = server.memory_info().rss / 2**20
        # Counted once ended and reaped, up to this process: a live process's CPU is read in 10 ms
        # ticks, each figure rounded down (~0.5 ms per step too little for ten live runners). The fork
        # server, told to stop, ends (with any runner it keeps waiting) and this process reaps it.
        fork_server().stop()
        total_cpu = me.cpu_since_start()
        reaped_at_end = cpu_and_faults(os.getpid(), reaped=True)
    overhead_ms = (total_cpu - command_cpu - sampling_cpu) * 1000 / args.steps
    server_cpu = server_at_end.user + server_at_end.system - server_at_start.user - server_at_start.system
    # Reaped by this process since the start: the fork server (its own and its runners', commands
    # included) minus what they had spent before the start.
    before = [server_own_at_start, server_reaped_at_start, runners_live_at_start]
    tree_cpu = reaped_at_end[0] - reaped_at_start[0] - sum(c for c, _ in before)
    tree_faults = reaped_at_end[1] - reaped_at_start[1] - sum(f for _, f in before)
    runners_cpu = tree_cpu - (server_own_at_end[0] - server_own_at_start[0])
    runner_faults = tree_faults - (server_own_at_end[1] - server_own_at_start[1])
    split = {
        "submitting_process": own_cpu - sampling_cpu,
        "fork_server": server_cpu,
        "runners": runners_cpu - command_cpu,
    }
    return {
        "bench": "local_executor",
        "machine": machine(),
        "steps": args.steps,
        "steps_per_workset": args.steps_per_workset,
        "in_flight": args.in_flight,
        "exit_notifications": notified,
        "poll_seconds": args.poll_seconds,
        "steps_per_second": round(args.steps / elapsed, 1),
        "overhead_cpu_ms_per_step": round(overhead_ms, 2),
        "command_cpu_ms_per_step": round(command_cpu * 1000 / args.steps, 2),
        "overhead_split_ms_per_step": {k: round(v * 1000 / args.steps, 2) for k, v in split.items()},
        "zombie_sampling_cpu_ms_per_step": round(sampling_cpu * 1000 / args.steps, 2),
        "submit_call": latency_summary(submit_calls),
        "submit_to_noticed": latency_summary(submit_to_noticed),
        "exit_to_noticed": latency_summary(exit_to_noticed),
        "most_zombies_at_once": most_zombies,
        "runner_page_faults_per_step": round(runner_faults / args.steps),
        "fork_server_rss_mb": round(server_rss_mb, 1),
    }


def lines_for(f: dict[str, Any]) -> list[str]:
    how = "exit notifications" if f["exit_notifications"] else f"polling every {f['poll_seconds']} s"
    return [
        f"{f['steps']} steps of `true` ({f['steps_per_workset']} a workset), {f['in_flight']} in flight, "
        f"ends noticed by {how}",
        f"overhead CPU per step (beyond the command): {f['overhead_cpu_ms_per_step']:8.2f} ms "
        f"(the command itself: {f['command_cpu_ms_per_step']} ms; the bench's zombie sampling, left out: "
        f"{f['zombie_sampling_cpu_ms_per_step']} ms)",
        "  of it: "
        + ", ".join(f"{k.replace('_', ' ')} {v} ms" for k, v in f["overhead_split_ms_per_step"].items()),
        f"steps/s: {f['steps_per_second']}",
        f"submit call:       p50 {f['submit_call']['p50_ms']:.1f} ms, p99 {f['submit_call']['p99_ms']:.1f} ms",
        f"submit -> noticed: p50 {f['submit_to_noticed']['p50_ms']:.1f} ms, p99 {f['submit_to_noticed']['p99_ms']:.1f} ms",
        f"exit -> noticed:   p50 {f['exit_to_noticed']['p50_ms']:.1f} ms, p99 {f['exit_to_noticed']['p99_ms']:.1f} ms",
        f"zombies at once (most): {f['most_zombies_at_once']}",
        f"runner page faults per step (with the command's): {f['runner_page_faults_per_step']}; "
        f"fork server resident: {f['fork_server_rss_mb']} MB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--steps-per-workset", type=int, default=1, help="a workset's steps, one after another"
    )
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="poll interval without notifications")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)


if __name__ == "__main__":
    main()
