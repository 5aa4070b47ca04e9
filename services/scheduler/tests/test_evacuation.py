"""Evacuation of a region that is down, on the real store, the real local executor and S3 on moto:
work not started there is re-routed at once; a running job is stopped and marked lost only after the
threshold, and the workset resumes in another region after the steps whose outputs were exported to
S3 (recomputing only what stayed on the lost cluster's disk)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.evacuation import RegionEvacuation
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, run_until, state_of
from services.scheduler.tests.test_dispatch_crash import assert_nothing_held, step_rows
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.domain.regions import RegionStatus
from stamen.executors.base import JobHandle
from stamen.executors.local import LocalExecutor
from stamen.store.unit_of_work import UnitOfWork
from tests.intake.s3kit import S3Lab, moto_url, s3lab

__all__ = ["moto_url", "s3lab"]


# Each execution of a step leaves a marker (holding its work folder) in a folder shared by both regions,
# so the test counts real runs. No braces but template fields: argv items are pipeline templates.
def mark(step: str) -> str:
    return (
        "import os,pathlib,time; d=pathlib.Path(os.environ['MARKS']); d.mkdir(exist_ok=True); "
        f"(d/('{step}-'+str(time.time_ns()))).write_text(os.getcwd()); "
    )


def put(bucket: str, key: str, body: str) -> str:
    return f"import boto3; boto3.client('s3').put_object(Bucket='{bucket}', Key='{{workset_id}}/{key}', Body=b'{body}'); "


def pipeline(bucket: str, go: Path) -> list[dict[str, object]]:
    wait = f"[time.sleep(0.05) for _ in iter(lambda: not pathlib.Path('{go}').exists(), False)]; "
    return [
        {   # exported: every output is in S3, so another region reuses it
            "name": "fetch",
            "argv": script(mark("fetch") + put(bucket, "fetched", "reads")),
            "outputs": [f"s3://{bucket}/{{workset_id}}/fetched"],
        },
        {   # local: its output stays on the cluster's disk; it waits for the test's go-ahead
            "name": "analyse",
            "argv": script(mark("analyse") + wait + "open('analysed','w').write('ok')"),
            "outputs": ["{workdir}/analysed"],
        },
        {
            "name": "publish",
            "argv": script(mark("publish") + "assert open('analysed').read() == 'ok'; " + put(bucket, "result", "done")),
            "outputs": [f"s3://{bucket}/{{workset_id}}/result"],
        },
    ]  # fmt: skip


async def region_down(pool: asyncpg.Pool, region: str, seconds_ago: float = 0.0) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.regions.change_status(
            region, previous=RegionStatus.HEALTHY, status=RegionStatus.DOWN, reason="postgres and nats unreachable",
            actor="regions", at=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        )  # fmt: skip
        await uow.commit()


def marks(tmp_path: Path, step: str) -> list[str]:
    return sorted(p.read_text() for p in (tmp_path / "marks").glob(f"{step}-*"))


async def test_admitted_work_is_rerouted_at_once_and_running_work_moves_after_the_threshold(
    pool: asyncpg.Pool, tmp_path: Path, s3lab: S3Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))  # the local executor passes the environment on
    go = tmp_path / "go"
    settings = settings_for(tmp_path, pipeline(s3lab.bucket, go), aws_endpoint_url=s3lab.url)
    await add_cluster(pool, "west", max_concurrent=4, workdir=tmp_path / "west", region="us-west-2")
    await add_cluster(pool, "east", max_concurrent=4, workdir=tmp_path / "east", region="us-east-1")
    loop = in_process_scheduler(pool, settings, lost_after_seconds=5.0)

    # Running in us-west-2: fetch done (exported to S3), analyse waiting on the go-ahead.
    running = await enqueue(pool, "acme", preferred_cluster="west")
    deadline = time.monotonic() + 30
    while not marks(tmp_path, "analyse"):
        await loop.tick()
        assert time.monotonic() < deadline, await state_of(pool, running)
    # Admitted to us-west-2 but not started there yet.
    waiting = await enqueue(pool, "beta", preferred_cluster="west")
    placed = await Admitter(pool, settings, "test").admit_next()
    assert placed is not None and (placed.workset_id, placed.cluster) == (waiting, "west")

    await region_down(pool, "us-west-2")
    await loop.tick()
    async with UnitOfWork(pool) as uow:
        rerouted = await uow.worksets.get(waiting)
        history = await uow.worksets.history(waiting)
    assert rerouted.cluster == "east", "re-routed and placed again in the same pass"
    requeue = next(h for h in history if h.from_state == "scheduled" and h.to_state == "queued")
    assert requeue.reason == (
        "region us-west-2 is down (postgres and nats unreachable): re-routed from west before its next step started"
    )
    assert await state_of(pool, running) == "running", "a running job is given the threshold to come back"

    await region_down(pool, "us-west-2", seconds_ago=10)  # past the 5 s threshold
    await loop.tick()  # analyse, still held on west, is marked lost before go (it cannot finish first)
    go.touch()  # from now on analyse can finish, wherever it runs
    assert await run_until(loop, pool, running, {"completed", "failed"}) == "completed"
    assert await run_until(loop, pool, waiting, {"completed", "failed"}) == "completed"

    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(running)
        runs = await uow.slots.runs(running)
    async with pool.acquire() as conn:
        steps = [tuple(r) for r in await conn.fetch(
            "SELECT attempt, step, cluster, state FROM step_runs WHERE workset_id = $1 ORDER BY id", running)]  # fmt: skip
    lost = next(h for h in history if h.from_state == "running" and h.to_state == "queued")
    assert "step analyse on west marked lost; retried elsewhere from its last completed step" in lost.reason
    resumed = [h for h in history if h.from_state == "scheduled" and h.to_state == "running"][-1]
    assert resumed.reason == "first step analyse submitted; reused exported outputs of fetch (from west)"
    assert steps == [
        (1, "fetch", "west", "succeeded"), (1, "analyse", "west", "lost"),
        (2, "analyse", "east", "succeeded"), (2, "publish", "east", "succeeded"),
    ]  # fmt: skip
    assert [(r["attempt"], r["cluster"], r["outcome"]) for r in runs] == [
        (1, "west", "lost"),
        (2, "east", "completed"),
    ]
    assert runs[0]["released_at"] <= runs[1]["admitted_at"], "never running in two regions at once"
    # Real executions: fetch ran once (kept in S3); analyse ran in both regions (its output stayed in the lost one).
    assert [Path(m).parts[-3] for m in marks(tmp_path, "fetch") if running in m] == ["west"]
    assert sorted(Path(m).parts[-3] for m in marks(tmp_path, "analyse") if running in m) == ["east", "west"]
    assert s3lab.client.get_object(Bucket=s3lab.bucket, Key=f"{running}/result")["Body"].read() == b"done"


class SlowCancelExecutor(LocalExecutor):
    """Stops a job only when released: a region whose cluster answers slowly (scancel over a slow link)."""

    def __init__(self) -> None:
        super().__init__(cluster="west", grace_seconds=1)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def cancel(self, handle: JobHandle) -> None:
        self.entered.set()
        await self.release.wait()
        await super().cancel(handle)


async def test_evacuation_holds_no_row_and_no_transaction_while_it_stops_a_job(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Like a submission: the job is stopped under its step run's lock only (a cancel through the API
    is not kept waiting on the lost region), then recorded in a short transaction."""
    settings = settings_for(tmp_path, [{"name": "long", "argv": script("import time; time.sleep(60)")}])
    await add_cluster(pool, "west", workdir=tmp_path / "west", region="us-west-2")
    await add_cluster(pool, "east", workdir=tmp_path / "east", region="us-east-1")  # somewhere to move to
    ws_id = await enqueue(pool, "acme", preferred_cluster="west")
    assert await run_until(in_process_scheduler(pool, settings), pool, ws_id, {"running"}) == "running"
    await region_down(pool, "us-west-2", seconds_ago=10)
    slow = SlowCancelExecutor()
    evacuation = RegionEvacuation(
        pool, ExecutorRegistry({"local": lambda _: slow}), "second", lost_after_seconds=5.0
    )
    evacuating = asyncio.create_task(evacuation.run_once())
    try:
        await asyncio.wait_for(slow.entered.wait(), 10)
        await assert_nothing_held(pool, ws_id)
        assert (
            await RegionEvacuation(pool, ExecutorRegistry({"local": lambda _: slow}), "third", 5.0).run_once()
            == 0
        )
    finally:
        slow.release.set()  # a failure above must not leave the evacuation (and the job) running
        assert await asyncio.wait_for(evacuating, 30) == 1
    assert await state_of(pool, ws_id) == "queued"
    assert [(step, state) for step, state, _ in await step_rows(pool, ws_id)] == [("long", "lost")]


async def test_a_region_that_is_down_keeps_its_work_when_no_other_region_can_take_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """One region (the embedded stack) through a NATS or PostgreSQL outage its probes saw: there is nowhere
    to move the work, so nothing is re-routed or marked lost, and new work still starts there."""
    steps = [{"name": "one", "argv": script("open('one.txt', 'w').write('1')")},
             {"name": "two", "argv": script("assert open('one.txt').read() == '1'")}]  # fmt: skip
    await add_cluster(pool, "west", max_concurrent=4, workdir=tmp_path / "west", region="us-west-2")
    loop = in_process_scheduler(pool, settings_for(tmp_path, steps), lost_after_seconds=1.0)
    await region_down(pool, "us-west-2", seconds_ago=60)  # long past the threshold
    ws = await enqueue(pool, "acme")
    assert await run_until(loop, pool, ws, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(ws)
    assert [
        (h.from_state, h.to_state) for h in history if h.to_state == "queued" and h.from_state != "validating"
    ] == []
