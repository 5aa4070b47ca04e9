"""Never dispatch twice: a scheduler that dies between recording a step and storing its job handle.

The fault is injected into the executor's submit: the process "dies" (an exception no handler
catches, so the submitting transaction is rolled back as a crash would) before or after the job was
started. Another scheduler then finds the step 'submitting' with nobody holding it, and fails the
attempt as LOST with a reason, instead of running the step again behind the first job's back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.planning import WorksetPlanner
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, run_until, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.executors.base import JobHandle, StepSpec
from stamen.executors.local import LocalExecutor
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the scheduler handles it, as nothing handles a process dying."""


class CrashingExecutor(LocalExecutor):
    def __init__(self, *, after_start: bool) -> None:
        super().__init__(cluster="local", grace_seconds=1)
        self.after_start = after_start
        self.started: list[JobHandle] = []

    async def submit(self, step: StepSpec) -> JobHandle:
        if self.after_start:
            self.started.append(await super().submit(step))
        raise SimulatedCrash


class SlowExecutor(LocalExecutor):
    """Submits only when released: a submitter that is alive but slow (sbatch over a slow link)."""

    def __init__(self) -> None:
        super().__init__(cluster="local", grace_seconds=1)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def submit(self, step: StepSpec) -> JobHandle:
        self.entered.set()
        await self.release.wait()
        return await super().submit(step)


def dispatcher(pool: asyncpg.Pool, settings: Settings, executor: LocalExecutor, holder: str) -> Dispatcher:
    registry = ExecutorRegistry({"local": lambda _: executor})
    return Dispatcher(pool, registry, WorksetPlanner(settings), holder, submit_grace_seconds=0.2)


async def failed_payload(pool: asyncpg.Pool, ws_id: str) -> dict[str, object]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox WHERE subject LIKE '%workset.failed' ORDER BY id")
    docs = [json.loads(bytes(r["body"])) for r in rows]
    [payload] = [d["payload"] for d in docs if d["workset_id"] == ws_id]
    return dict(payload)


@pytest.mark.parametrize("after_start", [False, True], ids=["before-submit", "after-submit"])
async def test_a_crash_between_recording_and_submitting_is_reconciled_not_run_twice(
    pool: asyncpg.Pool, tmp_path: Path, after_start: bool
) -> None:
    settings = settings_for(tmp_path, [{"name": "align", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    crashing = CrashingExecutor(after_start=after_start)
    assert await Admitter(pool, settings, "first").admit_all()
    with pytest.raises(SimulatedCrash):
        await dispatcher(pool, settings, crashing, "first").dispatch_pending()
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT state, handle, submitted_by FROM step_runs WHERE workset_id = $1", ws_id
            )
        # The record was committed before the executor was called: the job (if any) is not unrecorded.
        assert [(r["state"], r["handle"], r["submitted_by"]) for r in rows] == [("submitting", None, "first")]
        assert await state_of(pool, ws_id) == "scheduled"

        second = in_process_scheduler(pool, settings, holder="second", submit_grace_seconds=0.2)
        assert await run_until(second, pool, ws_id, {"failed", "running", "completed"}) == "failed"
        async with UnitOfWork(pool) as uow:
            counts = await uow.scheduling.step_run_counts(ws_id)
            leases = await uow.scheduling.running_by_tenant()
        async with pool.acquire() as conn:
            lost = await conn.fetchrow("SELECT state, reason FROM step_runs WHERE workset_id = $1", ws_id)
        assert counts == {"align": 1}  # the second scheduler did not submit the step again
        assert lost is not None and lost["state"] == "lost" and leases == {}
        failed = await failed_payload(pool, ws_id)
        assert failed["native_state"] == "LOST" and failed["step"] == "align"
        reason = str(failed["reason"])
        assert "first stopped after recording the step and before storing its job handle" in reason
        assert f"look for a process running in {tmp_path / 'work' / 'acme' / ws_id}" in reason
    finally:
        for handle in crashing.started:  # the orphan the crash left behind
            await LocalExecutor(grace_seconds=1).cancel(handle)


async def test_a_live_submitter_is_left_alone_however_long_it_takes(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [{"name": "quick", "argv": script("print('ok')")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    slow = SlowExecutor()
    assert await Admitter(pool, settings, "first").admit_all()
    submitting = asyncio.create_task(dispatcher(pool, settings, slow, "first").dispatch_pending())
    await asyncio.wait_for(slow.entered.wait(), 10)
    await asyncio.sleep(0.5)  # well past the other replica's grace period
    other = dispatcher(pool, settings, LocalExecutor(grace_seconds=1), "second")
    assert await other.reconcile_submitting() == 0  # the row is locked by its live submitter
    assert await other.dispatch_pending() == 0  # and the workset is not dispatched a second time
    slow.release.set()
    assert await asyncio.wait_for(submitting, 20) == 1
    loop = in_process_scheduler(pool, settings, holder="second")
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        assert await uow.scheduling.step_run_counts(ws_id) == {"quick": 1}
