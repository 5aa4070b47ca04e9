"""Never dispatch twice: a scheduler that dies between recording a step and storing its job handle.

The fault is injected into the executor's submit: the process "dies" (an exception no handler
catches, so the submitting transaction is rolled back as a crash would) before or after the job was
started. Another scheduler then finds the step 'submitting' with nobody holding it and asks the
executor for the job of exactly that submission: a job found is adopted and followed to its end; when
there is none, the step is submitted again in the same attempt. Each step counts its runs in a file
in the workdir, so a step run twice cannot go unnoticed."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.loop import SchedulerLoop
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, run_until, state_of
from services.scheduler.tests.test_scheduler_local import outbox_types, script, settings_for
from stamen.commands import request_cancel
from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle
from stamen.executors.local import LocalExecutor
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork

# Each run of a step adds one to <step>.count in the workdir (the step's cwd).
COUNT = "import os, time; p='{step}.count'; n=int(open(p).read()) if os.path.exists(p) else 0; open(p,'w').write(str(n+1)); "
GRACE = 0.2


def two_steps(tmp_path: Path, align_seconds: float = 0.0) -> Settings:
    return settings_for(
        tmp_path,
        [
            {"name": "align", "argv": script(COUNT.format(step="align") + f"time.sleep({align_seconds})")},
            {"name": "report", "argv": script(COUNT.format(step="report"))},
        ],
    )


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


class CountingExecutor(LocalExecutor):
    """The restarted scheduler's executor: records what it was asked to find and to submit."""

    def __init__(self) -> None:
        super().__init__(cluster="local", grace_seconds=1)
        self.found: list[tuple[str, int, bool]] = []  # (step, attempt, found?)
        self.submitted: list[tuple[str, int]] = []

    async def find(self, step: StepSpec) -> JobHandle | None:
        handle = await super().find(step)
        self.found.append((step.step, step.attempt, handle is not None))
        return handle

    async def submit(self, step: StepSpec) -> JobHandle:
        self.submitted.append((step.step, step.attempt))
        return await super().submit(step)


class UnreachableExecutor(CountingExecutor):
    """A cluster that cannot be asked: find fails (squeue timing out, SSH down)."""

    async def find(self, step: StepSpec) -> JobHandle | None:
        self.found.append((step.step, step.attempt, False))
        raise RuntimeError("squeue on ssh://head-node:22 did not finish within 60 s")


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


class SlowFindExecutor(CountingExecutor):
    """Answers `find` only when released: a reconciler asking a slow cluster (squeue over a slow link)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def find(self, step: StepSpec) -> JobHandle | None:
        self.entered.set()
        await self.release.wait()
        return await super().find(step)


async def assert_nothing_held(pool: asyncpg.Pool, ws_id: str) -> None:
    """No row of the workset or its step runs is locked, and no transaction is open (in this test's database)."""
    async with pool.acquire() as conn:
        rows = "SELECT s.id FROM step_runs s JOIN worksets w ON w.id = s.workset_id WHERE w.id = $1 FOR UPDATE NOWAIT"
        assert len(await conn.fetch(rows, ws_id)) >= 1
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )


def dispatcher(
    pool: asyncpg.Pool,
    settings: Settings,
    executor: LocalExecutor,
    holder: str,
    *,
    resubmit_after: float = 0.5,
) -> Dispatcher:
    registry = ExecutorRegistry({"local": lambda _: executor})
    return Dispatcher(
        pool, registry, WorksetPlanner(settings), holder,
        submit_grace_seconds=GRACE, resubmit_after_seconds=resubmit_after,
    )  # fmt: skip


def restarted_scheduler(
    pool: asyncpg.Pool, settings: Settings, executor: LocalExecutor, *, resubmit_after: float = 0.5
) -> SchedulerLoop:
    registry = ExecutorRegistry({"local": lambda _: executor})
    return SchedulerLoop(
        pool,
        Admitter(pool, settings, "second"),
        dispatcher(pool, settings, executor, "second", resubmit_after=resubmit_after),
        JobMonitor(pool, registry, "second"),
        poll_seconds=0.1,
    )


async def crash_while_dispatching(pool: asyncpg.Pool, settings: Settings, tmp_path: Path, *, after_start: bool
                                  ) -> tuple[str, CrashingExecutor]:  # fmt: skip
    """A workset admitted, then its first submission interrupted by the crash."""
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    crashing = CrashingExecutor(after_start=after_start)
    assert await Admitter(pool, settings, "first").admit_all()
    with pytest.raises(SimulatedCrash):
        await dispatcher(pool, settings, crashing, "first").dispatch_pending()
    # The record was committed before the executor was called: the job (if any) is not unrecorded.
    assert await step_rows(pool, ws_id) == [("align", "submitting", None)]
    assert await state_of(pool, ws_id) == "scheduled"
    await asyncio.sleep(GRACE * 2)  # the row is now older than the grace period: an orphan
    return ws_id, crashing


async def step_rows(pool: asyncpg.Pool, ws_id: str) -> list[tuple[str, str, str | None]]:
    """(step, state, job id) of every step run of the workset, in order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT step, state, handle->>'job_id' AS job_id FROM step_runs WHERE workset_id = $1 ORDER BY id",
            ws_id,
        )
    return [(r["step"], r["state"], r["job_id"]) for r in rows]


async def failed_payload(pool: asyncpg.Pool, ws_id: str) -> dict[str, object]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox WHERE subject LIKE '%workset.failed' ORDER BY id")
    docs = [json.loads(bytes(r["body"])) for r in rows]
    [payload] = [d["payload"] for d in docs if d["workset_id"] == ws_id]
    return dict(payload)


def runs_of(tmp_path: Path, ws_id: str, step: str) -> int:
    counter = tmp_path / "work" / "acme" / ws_id / f"{step}.count"
    return int(counter.read_text()) if counter.exists() else 0


async def wait_until_ended(handle: JobHandle, timeout: float = 30) -> None:
    executor = LocalExecutor(grace_seconds=1)
    deadline = asyncio.get_running_loop().time() + timeout
    while not (await executor.poll([handle]))[handle.job_id].state.finished:
        assert asyncio.get_running_loop().time() < deadline, f"job {handle.job_id} did not end"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("job_ended", [False, True], ids=["job-still-running", "job-already-ended"])
async def test_a_job_started_before_the_crash_is_found_and_adopted_not_run_twice(
    pool: asyncpg.Pool, tmp_path: Path, job_ended: bool
) -> None:
    settings = two_steps(tmp_path, align_seconds=1.5)
    ws_id, crashing = await crash_while_dispatching(pool, settings, tmp_path, after_start=True)
    [orphan_job] = crashing.started
    try:
        if job_ended:  # the scheduler stayed down longer than the step ran
            await wait_until_ended(orphan_job)
        restarted = CountingExecutor()
        # No resubmission before an hour: the job must be found, not submitted again.
        loop = restarted_scheduler(pool, settings, restarted, resubmit_after=3600)
        assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"

        assert runs_of(tmp_path, ws_id, "align") == 1  # the step ran once: adopted, not run again
        assert runs_of(tmp_path, ws_id, "report") == 1
        assert restarted.found == [("align", 1, True)]
        assert restarted.submitted == [("report", 1)]  # only the next step was submitted
        rows = await step_rows(pool, ws_id)
        assert rows[0] == ("align", "succeeded", orphan_job.job_id)  # the crashed submitter's job
        assert [(step, state) for step, state, _ in rows] == [("align", "succeeded"), ("report", "succeeded")]
        types = await outbox_types(pool, ws_id)
        assert types.count("workset.started") == 1 and types.count("workset.step_started") == 2
        assert "workset.failed" not in types
        async with UnitOfWork(pool) as uow:
            ws = await uow.worksets.get(ws_id)
            history = [(h.to_state, h.reason) for h in await uow.worksets.history(ws_id)]
        assert ws.attempt == 1
        assert ("running", "first step align found after its submitter stopped") in history
    finally:
        await LocalExecutor(grace_seconds=1).cancel(orphan_job)


async def test_a_crash_before_the_job_started_submits_it_once_in_the_same_attempt(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = two_steps(tmp_path)
    ws_id, _ = await crash_while_dispatching(pool, settings, tmp_path, after_start=False)

    # Not found, but recorded too recently: a submission in flight could still create the job.
    early = CountingExecutor()
    assert await dispatcher(pool, settings, early, "second", resubmit_after=3600).reconcile_submitting() == 0
    assert early.found == [("align", 1, False)] and early.submitted == []
    assert await step_rows(pool, ws_id) == [("align", "submitting", None)]

    restarted = CountingExecutor()
    loop = restarted_scheduler(pool, settings, restarted, resubmit_after=0.5)
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"

    assert runs_of(tmp_path, ws_id, "align") == 1 and runs_of(tmp_path, ws_id, "report") == 1
    assert ("align", 1, False) in restarted.found
    assert restarted.submitted == [("align", 1), ("report", 1)]  # submitted once, in attempt 1
    assert [(step, state) for step, state, _ in await step_rows(pool, ws_id)] == [
        ("align", "succeeded"),
        ("report", "succeeded"),
    ]
    types = await outbox_types(pool, ws_id)
    assert "workset.failed" not in types and types.count("workset.started") == 1
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        history = [(h.to_state, h.reason) for h in await uow.worksets.history(ws_id)]
    assert ws.attempt == 1  # not a retry: nothing had run
    assert ("running", "first step align submitted again after its submitter stopped") in history


async def test_a_reconciler_that_dies_while_resubmitting_is_itself_adopted_never_doubled(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The reconciler takes the orphan over (its clock restarts), starts the job and dies before storing
    the handle: the next reconciler waits from that restart, then finds that job and adopts it."""
    settings = two_steps(tmp_path, align_seconds=0.5)
    ws_id, _ = await crash_while_dispatching(pool, settings, tmp_path, after_start=False)

    async def align_row() -> tuple[str, datetime]:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT submitted_by, started_at FROM step_runs WHERE workset_id = $1 AND step = 'align'",
                ws_id,
            )
        assert row is not None
        return row["submitted_by"], row["started_at"]

    _, recorded_at = await align_row()
    await asyncio.sleep(0.6)  # past the first resubmission delay
    dying = CrashingExecutor(after_start=True)
    with pytest.raises(SimulatedCrash):
        await dispatcher(pool, settings, dying, "reconciler-1").reconcile_submitting()
    assert len(dying.started) == 1
    taken_over_by, restarted_at = await align_row()
    # Taken over, clock restarted: a later reconciler counts its delay from the takeover.
    assert taken_over_by == "reconciler-1" and restarted_at > recorded_at
    assert await step_rows(pool, ws_id) == [("align", "submitting", None)]
    try:
        restarted = CountingExecutor()
        loop = restarted_scheduler(pool, settings, restarted)
        assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
        assert runs_of(tmp_path, ws_id, "align") == 1  # the reconciler's job, adopted: never run twice
        assert ("align", 1, True) in restarted.found and ("align", 1) not in restarted.submitted
    finally:
        await LocalExecutor(grace_seconds=1).cancel(dying.started[0])


async def test_a_cluster_that_cannot_be_asked_leaves_the_step_alone_until_it_answers(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = two_steps(tmp_path, align_seconds=0.5)
    ws_id, crashing = await crash_while_dispatching(pool, settings, tmp_path, after_start=True)
    try:
        unreachable = UnreachableExecutor()
        assert await dispatcher(pool, settings, unreachable, "second").reconcile_submitting() == 0
        await asyncio.sleep(1.0)  # past the resubmission delay as well
        assert await dispatcher(pool, settings, unreachable, "second").reconcile_submitting() == 0
        # "Cannot tell" is not "not found": nothing was submitted, nothing failed.
        assert unreachable.submitted == [] and len(unreachable.found) == 2
        assert await step_rows(pool, ws_id) == [("align", "submitting", None)]
        assert await state_of(pool, ws_id) == "scheduled"

        restarted = CountingExecutor()
        loop = restarted_scheduler(pool, settings, restarted)
        assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
        assert runs_of(tmp_path, ws_id, "align") == 1
        assert restarted.submitted == [("report", 1)]
    finally:
        for handle in crashing.started:
            await LocalExecutor(grace_seconds=1).cancel(handle)


async def test_a_cancel_requested_while_nothing_was_submitted_cancels_without_submitting(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = two_steps(tmp_path)
    ws_id, _ = await crash_while_dispatching(pool, settings, tmp_path, after_start=False)
    assert (await request_cancel(pool, ws_id, actor="alice", reason="wrong reference")).pending

    restarted = CountingExecutor()
    assert await dispatcher(pool, settings, restarted, "second").reconcile_submitting() == 1
    assert restarted.submitted == []
    assert await state_of(pool, ws_id) == "cancelled"
    assert await step_rows(pool, ws_id) == [("align", "cancelled", None)]
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.running_by_tenant() == {}


async def test_a_step_that_cannot_be_looked_up_fails_the_attempt_as_lost(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = two_steps(tmp_path)
    ws_id, _ = await crash_while_dispatching(pool, settings, tmp_path, after_start=False)
    restarted = CountingExecutor()
    registry = ExecutorRegistry({"local": lambda _: restarted})
    # The pipeline changed meanwhile: the orphan's step is no longer planned, so it cannot be found.
    renamed = Dispatcher(
        pool,
        registry,
        lambda ws, cluster: [],
        "second",
        submit_grace_seconds=GRACE,
        resubmit_after_seconds=0.5,
    )
    assert await renamed.reconcile_submitting() == 1
    assert restarted.found == [] and restarted.submitted == []
    assert await state_of(pool, ws_id) == "failed"
    async with pool.acquire() as conn:
        lost = await conn.fetchrow("SELECT state, reason FROM step_runs WHERE workset_id = $1", ws_id)
    failed = await failed_payload(pool, ws_id)
    assert lost is not None and lost["state"] == "lost"
    assert failed["native_state"] == "LOST" and failed["step"] == "align"
    reason = str(failed["reason"])
    assert "first stopped after recording the step and before storing its job handle" in reason
    assert "the pipeline no longer has a step align" in reason
    assert "look for a process of step align running in the workset's workdir" in reason


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
    await asyncio.sleep(1.0)  # well past the other replica's grace period and resubmission delay
    other = dispatcher(pool, settings, LocalExecutor(grace_seconds=1), "second")
    try:
        assert await other.reconcile_submitting() == 0  # its live submitter holds the submission lock
        await assert_nothing_held(
            pool, ws_id
        )  # and nothing else: the slow cluster holds up no row, no transaction
        assert await other.dispatch_pending() == 0  # and the workset is not dispatched a second time
    finally:
        slow.release.set()  # a failure above must not leave the submitter (and the pool's teardown) waiting
    assert await asyncio.wait_for(submitting, 20) == 1
    loop = in_process_scheduler(pool, settings, holder="second")
    assert await run_until(loop, pool, ws_id, {"completed", "failed"}) == "completed"
    async with UnitOfWork(pool) as uow:
        assert await uow.step_runs.step_run_counts(ws_id) == {"quick": 1}


async def test_an_unreachable_cluster_does_not_hold_up_the_orphans_of_the_others(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The oldest orphan's cluster cannot be asked; a younger orphan on a healthy cluster is still
    looked up, found and adopted in the same pass."""
    settings = two_steps(tmp_path, align_seconds=0.5)
    await add_cluster(pool, "far", max_concurrent=1, workdir=tmp_path / "work")
    stuck = await enqueue(pool, "acme")
    assert await Admitter(pool, settings, "first").admit_all()
    with pytest.raises(SimulatedCrash):
        await dispatcher(pool, settings, CrashingExecutor(after_start=False), "first").dispatch_pending()
    await add_cluster(pool, "local", max_concurrent=1, workdir=tmp_path / "work")
    healthy = await enqueue(pool, "beta")
    assert await Admitter(pool, settings, "first").admit_all()
    crashing = CrashingExecutor(after_start=True)
    with pytest.raises(SimulatedCrash):
        await dispatcher(pool, settings, crashing, "first").dispatch_pending()
    await asyncio.sleep(GRACE * 2)
    try:
        unreachable, counting = UnreachableExecutor(), CountingExecutor()
        registry = ExecutorRegistry({"local": lambda c: unreachable if c.name == "far" else counting})
        second = Dispatcher(
            pool, registry, WorksetPlanner(settings), "second",
            submit_grace_seconds=GRACE, resubmit_after_seconds=3600,
        )  # fmt: skip
        assert await second.reconcile_submitting() == 1  # the healthy cluster's orphan, adopted
        assert unreachable.found == [("align", 1, False)] and counting.found == [("align", 1, True)]
        assert [state for _, state, _ in await step_rows(pool, healthy)] == ["running"]
        assert await step_rows(pool, stuck) == [("align", "submitting", None)]  # asked again next pass
    finally:
        for handle in crashing.started:
            await LocalExecutor(grace_seconds=1).cancel(handle)


async def test_a_reconciler_holds_no_row_and_no_transaction_while_it_asks_the_cluster(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Like a submitter, the reconciler asks the cluster for the orphan's job under the step run's lock
    only: a cancel through the API is not kept waiting on squeue, and a second reconciler stays away."""
    settings = two_steps(tmp_path, align_seconds=0.5)
    ws_id, crashing = await crash_while_dispatching(pool, settings, tmp_path, after_start=True)
    slow = SlowFindExecutor()
    reconciling = asyncio.create_task(
        dispatcher(pool, settings, slow, "second", resubmit_after=3600).reconcile_submitting()
    )
    try:
        await asyncio.wait_for(slow.entered.wait(), 10)
        await assert_nothing_held(pool, ws_id)
        other = CountingExecutor()
        assert await dispatcher(pool, settings, other, "third").reconcile_submitting() == 0
        assert other.found == [] and other.submitted == []  # the orphan is the first reconciler's
    finally:
        slow.release.set()
    try:
        assert await asyncio.wait_for(reconciling, 20) == 1
        assert slow.found == [("align", 1, True)]
        [(step, state, job_id)] = await step_rows(pool, ws_id)
        assert (step, state, job_id) == ("align", "running", crashing.started[0].job_id)  # adopted
    finally:
        for handle in crashing.started:
            await LocalExecutor(grace_seconds=1).cancel(handle)
