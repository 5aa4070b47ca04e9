"""The scheduler against the real store and the real local executor."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.scheduler.handlers import decide_retry, fire_retry, retry_policy
from services.scheduler.tests.support import (
    add_cluster,
    enqueue,
    in_process_scheduler,
    run_until,
    state_of,
    write_pipelines,
)
from services.scheduler.timers import TimerLoop
from stamen.commands import request_cancel
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetDiagnosed
from stamen.executors.local import runner_pid
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork
from stamen.worksets.cost import MeteredStep, metered_cost

PY = "{python}"


def settings_for(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Settings:
    return Settings(
        pipelines_file=write_pipelines(tmp_path / "pipelines.yaml", steps),
        work_dir=tmp_path / "work",
        retry_initial_seconds=0.2,
        retry_cap_seconds=0.5,
        **extra,
    )


def script(code: str) -> list[str]:
    return [PY, "-c", code]


async def outbox_types(pool: asyncpg.Pool, workset_id: str) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    docs = [json.loads(bytes(r["body"])) for r in rows]
    return [d["type"] for d in docs if d["workset_id"] == workset_id]


async def test_three_steps_run_in_order_and_complete(pool: asyncpg.Pool, tmp_path: Path) -> None:
    steps = [
        {"name": "one", "argv": script("open('one.txt','w').write('1')")},
        {"name": "two", "argv": script("assert open('one.txt').read()=='1'; open('two.txt','w').write('2')")},
        {"name": "three", "argv": script("print('done')")},
    ]
    settings = settings_for(tmp_path, steps)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings)
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        history = [h.to_state for h in await uow.worksets.history(ws_id)]
        counts = await uow.step_runs.step_run_counts(ws_id)
        leases = await uow.slots.running_by_tenant()
        ws = await uow.worksets.get(ws_id)
    assert history[-4:] == ["queued", "scheduled", "running", "completed"]
    assert counts == {"one": 1, "two": 1, "three": 1}
    async with UnitOfWork(pool) as uow:
        actual = await uow.actuals.for_workset(ws_id)
    assert actual is not None and actual["step_runs"] == 3 and actual["attempts"] == 1
    assert actual["cpu_seconds"] > 0 and actual["elapsed_seconds"] > 0 and actual["max_rss_mb"] > 0
    # Beside the estimate: wall time holding a slot, and metered cost (CPU time x list spot price).
    assert actual["wall_seconds"] > 0 and actual["cost_usd"] > 0
    assert actual["cost_usd"] == pytest.approx(
        metered_cost([MeteredStep(cpu_seconds=actual["cpu_seconds"])]).cost_usd, abs=1e-6
    )
    assert leases == {} and ws.cluster == "local"
    assert (
        ws.placement_scores is not None
        and list(ws.placement_scores) == ["local"]
        and ws.placement_reason
        and "locality" in ws.placement_reason
    )
    types = await outbox_types(pool, ws_id)
    assert types.count("workset.step_started") == 3 and types.count("workset.step_completed") == 3
    assert types[-1] == "workset.completed" and "workset.scheduled" in types


async def test_failing_step_reports_exit_code_and_stderr(pool: asyncpg.Pool, tmp_path: Path) -> None:
    steps = [
        {
            "name": "boom",
            "argv": script("import sys; sys.stderr.write('bwa: index not found\\n'); sys.exit(3)"),
        }
    ]
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings_for(tmp_path, steps))
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "failed"
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM outbox WHERE subject LIKE '%workset.failed'")
        leases = await conn.fetchval("SELECT count(*) FROM slot_leases")
    failed = json.loads(bytes(body))["payload"]
    assert failed["exit_code"] == 3 and failed["step"] == "boom"
    # Claim check: the event points at the step run, whose log tail diagnostics reads from PostgreSQL.
    async with UnitOfWork(pool) as uow:
        log_tail = await uow.step_runs.log_tail(ws_id, failed["step_run_id"])
    assert log_tail is not None and "bwa: index not found" in log_tail
    assert leases == 0


async def test_partial_retry_resumes_at_the_failed_step(pool: asyncpg.Pool, tmp_path: Path) -> None:
    flaky = "import os,sys; n=int(open('n').read()) if os.path.exists('n') else 0; open('n','w').write(str(n+1)); sys.exit(0 if n>=2 else 1)"
    steps = [
        {"name": "stage", "argv": script("print('staged')")},
        {"name": "flaky", "argv": script(flaky)},
        {"name": "report", "argv": script("print('report')")},
    ]
    settings = settings_for(tmp_path, steps)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings)
    policy = retry_policy(settings)
    timers = TimerLoop(
        pool,
        {"retry": fire_retry},
        loop.wake,
    )
    for attempt in (1, 2):
        assert await run_until(loop, pool, ws_id, {"failed"}) == "failed"
        diagnosed = new_envelope(
            WorksetDiagnosed(attempt=attempt, code="WS-NET-001", retry_class="transient", retryable=True),
            tenant_id="acme",
            region="us-west-2",
            workset_id=ws_id,
        )
        async with UnitOfWork(pool) as uow:
            await decide_retry(uow, diagnosed, policy=policy)
            await uow.commit()
        assert await state_of(pool, ws_id) == "retry_wait"
        while await timers.fire_due() == 0:
            pass
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        counts = await uow.step_runs.step_run_counts(ws_id)
        ws = await uow.worksets.get(ws_id)
    assert counts == {"stage": 1, "flaky": 3, "report": 1}  # earlier steps ran once
    assert ws.retry_count == 2 and ws.attempt == 3


async def test_cancel_stops_the_running_step_and_frees_the_slot(pool: asyncpg.Pool, tmp_path: Path) -> None:
    steps = [{"name": "long", "argv": script("import time; open('started','w'); time.sleep(60)")}]
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings_for(tmp_path, steps))
    await run_until(loop, pool, ws_id, {"running"})
    result = await request_cancel(pool, ws_id, actor="alice", reason="wrong reference")
    assert result.pending
    assert await run_until(loop, pool, ws_id, {"cancelled", "failed"}) == "cancelled"
    async with UnitOfWork(pool) as uow:
        history = await uow.worksets.history(ws_id)
        assert await uow.slots.running_by_tenant() == {}
    assert history[-1].actor == "alice"


async def test_max_duration_ends_a_runaway_run_with_a_timeout(pool: asyncpg.Pool, tmp_path: Path) -> None:
    steps = [{"name": "long", "argv": script("import time; time.sleep(60)")}]
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme", max_duration_seconds=1)
    loop = in_process_scheduler(pool, settings_for(tmp_path, steps))
    assert await run_until(loop, pool, ws_id, {"failed", "cancelled"}) == "failed"
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM outbox WHERE subject LIKE '%workset.failed'")
    failed = json.loads(bytes(body))["payload"]
    # Not Slurm's TIMEOUT (retried with more resources): the workset's own limit, which a retry keeps.
    assert "max duration" in failed["reason"] and failed["native_state"] == "MAX_DURATION"


async def test_a_vanished_job_is_reported_as_a_failure_with_its_cause(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    steps = [{"name": "long", "argv": script("import time; time.sleep(60)")}]
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    loop = in_process_scheduler(pool, settings_for(tmp_path, steps))
    await run_until(loop, pool, ws_id, {"running"})
    async with UnitOfWork(pool) as uow:
        active = await uow.step_runs.active_step_run_for(ws_id)
    assert active is not None
    os.killpg(runner_pid(active.handle), signal.SIGKILL)  # the runner and its command vanish together
    assert await run_until(loop, pool, ws_id, {"failed"}) == "failed"
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM outbox WHERE subject LIKE '%workset.failed'")
    failed = json.loads(bytes(body))["payload"]
    assert failed["native_state"] == "LOST" and "disappeared" in failed["reason"]


async def test_a_new_scheduler_reattaches_to_running_jobs_instead_of_rerunning(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    steps = [
        {"name": "slow", "argv": script("import time; time.sleep(1.5)")},
        {"name": "fast", "argv": script("pass")},
    ]
    settings = settings_for(tmp_path, steps)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    first = in_process_scheduler(pool, settings, holder="first")
    await run_until(first, pool, ws_id, {"running"})
    del first  # as if the process died: nothing in memory survives
    second = in_process_scheduler(pool, settings, holder="second")
    assert await run_until(second, pool, ws_id, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.step_run_counts(ws_id) == {"slow": 1, "fast": 1}


@pytest.mark.parametrize(
    "retry_class,reason", [("data", "not_retryable"), ("transient", "retries_exhausted")]
)
async def test_no_retry_for_data_errors_and_dead_letter_after_exhaustion(
    pool: asyncpg.Pool, tmp_path: Path, retry_class: str, reason: str
) -> None:
    steps = [{"name": "boom", "argv": script("raise SystemExit(1)")}]
    settings = settings_for(tmp_path, steps)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme", max_retries=0)
    loop = in_process_scheduler(pool, settings)
    assert await run_until(loop, pool, ws_id, {"failed"}) == "failed"
    diagnosed = new_envelope(
        WorksetDiagnosed(
            attempt=1,
            code="WS-X",
            retry_class=retry_class,
            retryable=retry_class == "transient",
        ),
        tenant_id="acme",
        region="us-west-2",
        workset_id=ws_id,
    )
    async with UnitOfWork(pool) as uow:
        await decide_retry(uow, diagnosed, policy=retry_policy(settings))
        await uow.commit()
    # Either way it ends in the dead-letter queue, saying why.
    assert await state_of(pool, ws_id) == "dead_lettered"
    async with UnitOfWork(pool) as uow:
        parked = await uow.dead_letters.list()
    assert [(p["workset_id"], p["reason"]) for p in parked] == [(ws_id, reason)]
