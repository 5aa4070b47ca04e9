"""Two scheduler processes on 200 worksets; a scheduler killed mid-run and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml

from services.scheduler.tests.support import enqueue, write_pipelines
from stamen.domain.lifecycle import WorksetState
from stamen.events.types import RetryScheduled, WorksetFailed
from stamen.stack.ports import free_port
from stamen.store.unit_of_work import UnitOfWork

pytestmark = pytest.mark.slow


def start_scheduler(
    tmp_path: Path, database_url: str, nats_url: str, name: str, **env: str
) -> subprocess.Popen[bytes]:
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "STAMEN_HTTP_PORT": str(free_port()),
        "STAMEN_SCHEDULER_POLL_SECONDS": "0.2",
        "STAMEN_WORK_DIR": str(tmp_path / "work"),
        "STAMEN_PIPELINES_FILE": str(tmp_path / "pipelines.yaml"),
        "STAMEN_CLUSTERS_FILE": str(tmp_path / "clusters.yaml"),
        **env,
    }
    log = (tmp_path / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.scheduler"], env=full_env, stdout=log, stderr=subprocess.STDOUT
    )


async def ready(port: int, process: subprocess.Popen[bytes]) -> datetime:
    """When the scheduler on `port` first answered /readyz with 200."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the scheduler exited"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return datetime.now(UTC)
            await asyncio.sleep(0.1)
    raise AssertionError("the scheduler was not ready within 60 s")


def write_clusters(tmp_path: Path, clusters: list[tuple[str, int]]) -> None:
    doc = {
        "clusters": [
            {
                "name": n,
                "region": "us-west-2",
                "executor": "local",
                "max_concurrent": m,
                "config": {"workdir_root": str(tmp_path / "work")},
            }
            for n, m in clusters
        ]
    }
    (tmp_path / "clusters.yaml").write_text(yaml.safe_dump(doc))


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    points = sorted(
        [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda p: (p[0], p[1])
    )
    peak = now = 0
    for _, delta in points:
        now += delta
        peak = max(peak, now)
    return peak


async def wait_all_final(
    pool: asyncpg.Pool, expected: int, timeout: float, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            done = await conn.fetchval("SELECT count(*) FROM worksets WHERE state IN ('completed', 'failed')")
        if done >= expected:
            return
        for p in procs:
            assert p.poll() is None, (tmp_path / "s1.log").read_text()[-3000:]
        assert time.monotonic() < deadline, f"only {done}/{expected} finished"
        await asyncio.sleep(0.5)


async def test_two_schedulers_200_worksets_never_exceed_limits_and_share_fairly(
    pool: asyncpg.Pool, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    write_pipelines(
        tmp_path / "pipelines.yaml",
        [{"name": "work", "argv": ["{python}", "-c", "import time; time.sleep(0.05)"]}],
    )
    write_clusters(tmp_path, [("c1", 2), ("c2", 2)])
    ids: list[str] = []
    for i in range(196):  # four tenants with big backlogs ...
        ids.append(await enqueue(pool, f"t{i % 4}"))
    limits = {"STAMEN_MAX_CONCURRENT_WORKSETS": "3", "STAMEN_DEFAULT_TENANT_MAX_CONCURRENT": "1"}
    procs = [start_scheduler(tmp_path, database_url, nats_url, f"s{n}", **limits) for n in (1, 2)]
    try:
        await asyncio.sleep(2.0)
        # ... and one with 4, arriving late (the first may be admitted before the last is queued)
        small_queued_at = datetime.now(UTC)
        small = [await enqueue(pool, "small") for _ in range(4)]
        await wait_all_final(pool, 200, 300, procs, tmp_path)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(30) == 0
    async with UnitOfWork(pool) as uow:
        runs = await uow.slots.runs()
        states = Counter(await uow.worksets.count_by_state())
    assert states == Counter({"completed": 200}), states
    assert len(runs) == 200 and len({r["workset_id"] for r in runs}) == 200  # nobody dispatched twice
    assert {r["holder"].split(":")[-1] for r in runs} == {str(p.pid) for p in procs}  # both did work
    spans = [(r["admitted_at"], r["released_at"]) for r in runs]
    assert max_overlap(spans) <= 3
    for cluster in ("c1", "c2"):
        assert (
            max_overlap([(r["admitted_at"], r["released_at"]) for r in runs if r["cluster"] == cluster]) <= 2
        )
    for tenant in {r["tenant_id"] for r in runs}:
        assert (
            max_overlap([(r["admitted_at"], r["released_at"]) for r in runs if r["tenant_id"] == tenant]) <= 1
        )
    async with pool.acquire() as conn:
        steps = await conn.fetchval("SELECT count(*) FROM step_runs")
    assert steps == 200
    # Fair share: the late tenant's first workset starts within a round of admissions, not after the
    # 196-workset backlog; all four of its worksets run before the backlog is half done.
    after = sorted((r for r in runs if r["admitted_at"] >= small_queued_at), key=lambda r: r["admitted_at"])
    order = [r["tenant_id"] for r in after]
    assert order.index("small") <= 4, order[:10]
    small_positions = [i for i, t in enumerate(order) if t == "small"]
    assert len(small_positions) == len(small) and max(small_positions) < len(order) // 2


async def test_killed_scheduler_reattaches_and_timers_fire_on_time(
    pool: asyncpg.Pool, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    write_pipelines(
        tmp_path / "pipelines.yaml",
        [{"name": "slow", "argv": ["{python}", "-c", "import time; time.sleep(4)"]}],
    )
    write_clusters(tmp_path, [("c1", 4)])
    running = [await enqueue(pool, f"t{i}") for i in range(2)]
    first = start_scheduler(tmp_path, database_url, nats_url, "first")
    try:
        deadline = time.monotonic() + 30
        while True:
            async with pool.acquire() as conn:
                n = await conn.fetchval("SELECT count(*) FROM step_runs WHERE state = 'running'")
            if n == 2:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # A workset waiting for a retry that falls due while no scheduler is alive: made after the kill (made
    # before it, on a loaded machine the first scheduler fired it, admitted it and was killed between
    # recording its step and starting it, and the step then waits out the 120 s resubmit guard).
    waiting = await enqueue(pool, "t9")
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(waiting, for_update=True)
        ws.transition(WorksetState.SCHEDULED, actor="test")
        ws.transition(WorksetState.RUNNING, actor="test")
        ws.transition(WorksetState.FAILED, actor="test", event=WorksetFailed(reason="test"))
        due = datetime.now(UTC) + timedelta(seconds=2)
        ws.transition(
            WorksetState.RETRY_WAIT,
            actor="test",
            event=RetryScheduled(attempt=2, due_at=due, delay_seconds=2),
        )
        ws.attempt = 1
        await uow.worksets.save(ws)
        await uow.timers.add_timer(ws.id, "retry", due, {})
        await uow.commit()
    port = free_port()
    second = start_scheduler(tmp_path, database_url, nats_url, "second", STAMEN_HTTP_PORT=str(port))
    try:
        ready_at = await ready(port, second)
        await wait_all_final(pool, 3, 60, [second], tmp_path)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    async with UnitOfWork(pool) as uow:
        for ws_id in running:
            assert await uow.step_runs.step_run_counts(ws_id) == {"slow": 1}  # re-attached, not re-run
            assert (await uow.worksets.get(ws_id)).state is WorksetState.COMPLETED
        [timer] = await uow.timers.timers_for(waiting)
        history = await uow.worksets.history(waiting)
    assert timer["fired_at"] is not None
    # On time: within 3 s of its due time, or of the second scheduler being ready if it fell due before
    # (on a loaded machine the start of a Python process alone can outlast the 2 s).
    assert timer["fired_at"] >= timer["due_at"]
    lateness = (timer["fired_at"] - max(timer["due_at"], ready_at)).total_seconds()
    assert lateness < 3, f"fired {lateness:.2f}s after its due time or the scheduler's start"
    assert [h.to_state for h in history][-5:] == ["retry_wait", "queued", "scheduled", "running", "completed"]
