"""The local executor's own cost per step, beside the command's: CPU, latency, zombies.

    python bench/local_executor.py [--steps 300] [--in-flight 10] [--poll-seconds 1.0] [--json]

Runs `--steps` steps whose command is `true` through `LocalExecutor` (submit, poll, as the scheduler
does), `--in-flight` at a time. A step's end is noticed when the executor reports it (`on_job_exit`,
where it can), else at the next poll every `--poll-seconds` (the scheduler's default interval).
Prints:

- overhead CPU per step: all CPU of this process and every process it started (the fork server or the
  runners, and the commands), minus the commands' own CPU (from their status files) and minus the CPU
  this process spends counting zombies (a scan of /proc, ~2 ms a time, which is the bench's, not the
  executor's); and where it goes: this process (submit, poll, the event loop), the fork server itself,
  the runners it forked (its reaped children's CPU minus the commands');
- submit call: how long `submit` takes (the scheduler's dispatch waits for it);
- exit -> noticed: from the command's end (status file) to this process knowing it (it includes
  waiting for the submits in progress: this loop, like the scheduler's, submits one step at a time);
- the most zombie processes seen at once among this process's descendants;
- runner page faults per step (the fork server's reaped children's minor faults, with the commands'
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


def reaped_minor_faults(pid: int) -> int:
    """cminflt of /proc/<pid>/stat: the minor page faults of the children `pid` has reaped."""
    fields = proc_stat_fields(pid)
    return int(fields[8]) if fields else 0


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
        faults_at_start = reaped_minor_faults(server.pid)
        pending = [StepSpec(workset_id=f"ws-{i}", attempt=1, step="s", argv=["true"], workdir=str(folder / str(i)))
                   for i in range(args.steps)]  # fmt: skip
        pending.reverse()
        running: dict[str, tuple[JobHandle, float]] = {}
        submit_calls: list[float] = []
        submit_to_noticed: list[float] = []
        exit_to_noticed: list[float] = []
        command_cpu = 0.0
        sampling_cpu = 0.0
        most_zombies = 0
        t0 = time.perf_counter()
        while pending or running:
            while pending and len(running) < args.in_flight:
                t_submit = time.perf_counter()
                handle = await executor.submit(pending.pop())
                submit_calls.append(time.perf_counter() - t_submit)
                running[handle.job_id] = (handle, time.perf_counter())
            woken.clear()  # before the poll: an exit told while it runs wakes the wait below
            statuses = await executor.poll([h for h, _ in running.values()])
            now_wall, now = time.time(), time.perf_counter()
            for job_id, status in statuses.items():
                if status.state.finished:
                    _, submitted = running.pop(job_id)
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
        await asyncio.sleep(0.2)  # the last runners have exited and been reaped
        total_cpu = me.cpu_since_start()
        server_at_end, own_cpu = server.cpu_times(), time.process_time() - own_at_start
        runner_faults = reaped_minor_faults(server.pid) - faults_at_start
        server_rss_mb = server.memory_info().rss / 2**20
    overhead_ms = (total_cpu - command_cpu - sampling_cpu) * 1000 / args.steps
    server_cpu = server_at_end.user + server_at_end.system - server_at_start.user - server_at_start.system
    reaped_cpu = (server_at_end.children_user + server_at_end.children_system
                  - server_at_start.children_user - server_at_start.children_system)  # fmt: skip
    split = {
        "submitting_process": own_cpu - sampling_cpu,
        "fork_server": server_cpu,
        "runners": reaped_cpu - command_cpu,
    }
    return {
        "bench": "local_executor",
        "machine": machine(),
        "steps": args.steps,
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
        f"{f['steps']} steps of `true`, {f['in_flight']} in flight, ends noticed by {how}",
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
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="poll interval without notifications")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    bench_process()
    figures = asyncio.run(run(args))
    emit(figures, lines_for(figures), args.json)


if __name__ == "__main__":
    main()
