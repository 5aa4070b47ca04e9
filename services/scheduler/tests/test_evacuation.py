"""Evacuation of a region that is down, on the real store, the real local executor and S3 on moto:
work not started there is re-routed at once; a running job is stopped and marked lost only after the
threshold, and the workset resumes in another region after the steps whose outputs were exported to
S3 (recomputing only what stayed on the lost cluster's disk)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, run_until, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.domain.regions import RegionStatus
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
    assert [(r["attempt"], r["cluster"], r["outcome"]) for r in runs] == [(1, "west", "lost"), (2, "east", "completed")]
    assert runs[0]["released_at"] <= runs[1]["admitted_at"], "never running in two regions at once"
    # Real executions: fetch ran once (kept in S3); analyse ran in both regions (its output stayed in the lost one).
    assert [Path(m).parts[-3] for m in marks(tmp_path, "fetch") if running in m] == ["west"]
    assert sorted(Path(m).parts[-3] for m in marks(tmp_path, "analyse") if running in m) == ["east", "west"]
    assert s3lab.client.get_object(Bucket=s3lab.bucket, Key=f"{running}/result")["Body"].read() == b"done"
