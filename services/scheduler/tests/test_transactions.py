"""What the scheduler's work costs in PostgreSQL transactions, counted from the client side (every
statement asyncpg sends, through its query logger): a statement outside BEGIN … COMMIT is a
transaction of its own, as PostgreSQL counts it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from services.scheduler import monitor as monitor_module
from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, state_of
from services.scheduler.tests.test_scheduler_local import script, settings_for
from stamen.commands import request_cancel
from stamen.domain.steps import StepSpec
from stamen.executors.base import JobHandle, JobStatus
from stamen.executors.local import LocalExecutor
from stamen.store.db import create_pool
from tests.transactions import TransactionCounter


async def test_a_dispatched_step_costs_two_transactions_its_claim_and_its_outcome(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The step run's lock is taken in the transaction that records the step and given back in the one
    that stores its job handle: no transaction of its own to lock, check the claim, unlock or reset the
    session (there were four more per step, the largest share of the scheduler's transactions)."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("pass")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    assert await Admitter(pool, settings, "test-scheduler").admit_next() is not None
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        executor = LocalExecutor(cluster="local", grace_seconds=1)
        dispatcher = Dispatcher(
            counting,
            ExecutorRegistry({"local": lambda _: executor}),
            WorksetPlanner(settings),
            "test-scheduler",
        )
        # What a pass costs with nothing to dispatch, then the same pass dispatching one step.
        idle_before = await counter.count()
        assert (
            await Dispatcher(
                counting, ExecutorRegistry({"local": lambda _: executor}), WorksetPlanner(settings), "other"
            ).reconcile_submitting()
            == 0
        )
        reconcile_only = await counter.count() - idle_before
        start = await counter.count()
        assert await dispatcher.dispatch_pending() == 1
        spent = await counter.count() - start
    finally:
        await counting.close()
    assert await state_of(pool, ws_id) == "running"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM step_runs WHERE workset_id = $1", ws_id) == "running"
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    assert held == 0, "the step run's lock was given back"
    # reconcile's look for orphans + the step's two + the claim that found nothing more (not asyncpg's look-up
    # of array types, once per connection, a transaction of its own when it falls outside one).
    statements = [t for t in counter.transactions[-spent:] if not all(map(_asyncpg_introspection, t))]
    assert len(statements) == reconcile_only + 2 + 1, statements
    assert not any("pg_advisory_unlock_all" in s for t in statements for s in t), statements


async def test_a_pass_with_nothing_to_do_costs_one_transaction(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The survey asks every question of a pass at once: no transaction per part to find nothing (there
    were seven), also when worksets are queued but every slot is taken."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work", max_concurrent=1)
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        loop = in_process_scheduler(counting, settings)
        start = await counter.count()
        assert await loop.tick() is False
        assert await counter.count() - start == 1, counter.transactions[start:]
        # One statement, with the running steps' read (it was a read-only transaction of two: four round trips).
        assert len(counter.transactions[start]) == 1, counter.transactions[start]
        # One workset runs (a long step) and another waits for its slot.
        running, waiting = await enqueue(pool, "acme"), await enqueue(pool, "acme")
        assert await loop.tick() is True
        assert {await state_of(pool, running), await state_of(pool, waiting)} == {"running", "queued"}
        start = await counter.count()
        assert await loop.tick() is False
        idle = counter.transactions[start:]
    finally:
        await counting.close()
    assert len(idle) == 1, idle


async def test_admission_does_not_ask_again_once_it_took_the_last_slot(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work", max_concurrent=1)
    await enqueue(pool, "acme")
    await enqueue(pool, "acme")
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        admitter = Admitter(counting, settings, "test-scheduler")
        start = await counter.count()
        assert len(await admitter.admit_all()) == 1
        spent = counter.transactions[start:]
    finally:
        await counting.close()
    assert len(spent) == 1, spent  # the admission; not a second decision that finds every slot taken


async def test_a_decision_with_every_slot_taken_reads_no_queue_and_one_head_s_spec(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Admission reads the spec facts (preferred cluster, input buckets) of the one head it places, also
    when three tenants tie in front (never admitted, nothing running: their heads are read from the
    index alone, then the facts of the oldest); with every slot taken it does not read the queue at all."""
    settings = settings_for(
        tmp_path,
        [{"name": "one", "argv": script("pass")}],
        max_concurrent_worksets=1,
        default_tenant_max_concurrent=5,
    )
    await add_cluster(pool, workdir=tmp_path / "work", max_concurrent=5)
    for tenant in ("acme", "beta", "gamma"):
        await enqueue(pool, tenant)
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        admitter = Admitter(counting, settings, "test-scheduler")
        start = await counter.count()
        assert await admitter.admit_next() is not None
        assert await admitter.admit_next() is None  # the one global slot is taken now
        admitted, blocked = counter.transactions[start:]
    finally:
        await counting.close()
    reads_specs = [
        s for s in admitted if "spec" in s and s.startswith(("SELECT", "WITH")) and "UPDATE worksets" not in s
    ]  # a save (WITH updated AS (UPDATE worksets SET ... spec ...)) writes the spec, it does not read it
    assert len(reads_specs) == 1 and "WHERE w.id = $1" in reads_specs[0], admitted
    assert not any("worksets" in s for s in blocked), blocked


async def test_a_step_that_succeeds_is_followed_by_the_next_in_the_same_transaction(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The monitor records a step's success and records the next step for submission (or completes the
    workset) in one transaction, then submits it: no dispatcher pass, no claim of its own."""
    settings = settings_for(
        tmp_path, [{"name": "one", "argv": script("pass")}, {"name": "two", "argv": script("pass")}]
    )
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    executor = LocalExecutor(cluster="local", grace_seconds=1)
    registry = ExecutorRegistry({"local": lambda _: executor})
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), "test-scheduler")
    assert await Admitter(pool, settings, "test-scheduler").admit_next() is not None
    assert await dispatcher.dispatch_pending() == 1  # step one submitted

    async def steps() -> list[tuple[str, str]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT step, state FROM step_runs WHERE workset_id = $1 ORDER BY id", ws_id
            )
        return [(r["step"], r["state"]) for r in rows]

    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        monitor = JobMonitor(
            counting,
            registry,
            "test-scheduler",
            Dispatcher(counting, registry, WorksetPlanner(settings), "test-scheduler"),
        )
        deadline = asyncio.get_running_loop().time() + 30
        while (await steps())[0][1] != "succeeded":
            await monitor.poll_once()
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert (await steps())[1] == ("two", "running")  # started by the monitor, in the same pass
        while await state_of(pool, ws_id) != "completed":
            await monitor.poll_once()
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await counting.close()
    assert await steps() == [("one", "succeeded"), ("two", "succeeded")]
    # Not the poll's reads, nor asyncpg's look-up of array types, once per connection (its statements
    # fall in the first transaction on each connection that uses them).
    own = [[s for s in t if not _asyncpg_introspection(s)] for t in counter.transactions]
    changes = [t for t in own if any(s.startswith(("WITH", "INSERT", "UPDATE", "DELETE")) for s in t)]
    # step one's end + step two recorded: one transaction; step two's handle: one more; step two's end and
    # the workset completed: a third. Their statements:
    # - step one's end: its step run's end with the workset's read and lock and what the dispatcher reads (the
    #   tenant's buckets, the cluster, the steps done and their resources, whether to dispatch): one statement;
    #   the workset's save with its events and step two's row: one (was 8: the end, the read, the dispatchable
    #   check, three reads, the row, the save; then 4, then 3: the dispatcher's reads apart);
    # - step two's handle (the workset runs already): stored with its lock given back and its event, in one
    #   statement outside BEGIN … COMMIT (was 3 in a transaction: the handle, the workset's read, its save);
    # - step two's end: the end with the read and the dispatcher's reads (with the actuals' read), the save
    #   (completed) with the slot given back and the actuals written (was 12, then 6, then 3).
    assert [len(t) for t in changes] == [2, 1, 2], changes


async def test_a_replica_leaves_the_end_of_another_s_job_to_it_for_a_few_seconds(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replicas see a local job end; its submitter (woken by the exit) records it, the other does
    not try at once (it used to: a transaction each, all but one finding the end recorded or locked).
    Past OTHERS_JOBS_AFTER_SECONDS any replica records it: the submitter may have died."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("pass")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    executor = LocalExecutor(cluster="local", grace_seconds=1)
    registry = ExecutorRegistry({"local": lambda _: executor})
    assert await Admitter(pool, settings, "a").admit_next() is not None
    assert await Dispatcher(pool, registry, WorksetPlanner(settings), "a").dispatch_pending() == 1
    other = JobMonitor(pool, registry, "b")
    deadline = asyncio.get_running_loop().time() + 30
    while not (tmp_path / "work").exists() or not await _ended(executor, pool, ws_id):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert await other.poll_once() == 0
    assert await state_of(pool, ws_id) == "running"
    monkeypatch.setattr(monitor_module, "OTHERS_JOBS_AFTER_SECONDS", 0.0)  # as if it ended long ago
    assert await other.poll_once() == 1


class CountingPolls(LocalExecutor):
    def __init__(self) -> None:
        super().__init__(cluster="local", grace_seconds=1)
        self.polled: list[str] = []

    async def poll(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        self.polled += [h.job_id for h in handles]
        return await super().poll(handles)


async def test_a_replica_does_not_poll_another_s_job_younger_than_the_wait(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another scheduler's job that started less than OTHERS_JOBS_AFTER_SECONDS ago cannot have ended that
    long ago: a pass does not ask its cluster about it (each pass asked about all the others' jobs)."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    await enqueue(pool, "acme")
    executor = CountingPolls()
    registry = ExecutorRegistry({"local": lambda _: executor})
    assert await Admitter(pool, settings, "a").admit_next() is not None
    assert await Dispatcher(pool, registry, WorksetPlanner(settings), "a").dispatch_pending() == 1
    assert await JobMonitor(pool, registry, "b").poll_once() == 0
    assert executor.polled == []
    assert await JobMonitor(pool, registry, "a").poll_once() == 0  # its own: asked at once
    assert len(executor.polled) == 1
    monkeypatch.setattr(monitor_module, "OTHERS_JOBS_AFTER_SECONDS", 0.0)  # as if it started long ago
    assert await JobMonitor(pool, registry, "b").poll_once() == 0  # asked: still running
    assert len(executor.polled) == 2
    async with pool.acquire() as conn:
        handle = await conn.fetchval("SELECT handle FROM step_runs")
    await executor.cancel(JobHandle.model_validate_json(handle))


async def _ended(executor: LocalExecutor, pool: asyncpg.Pool, ws_id: str) -> bool:
    async with pool.acquire() as conn:
        handle = await conn.fetchval("SELECT handle FROM step_runs WHERE workset_id = $1", ws_id)
    status = (await executor.poll([JobHandle.model_validate_json(handle)])) if handle else {}
    return any(s.state.finished for s in status.values())


async def test_an_admission_records_and_submits_the_first_step(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """The transaction that admits a workset also records its first step for submission (what the
    dispatcher's claim would do next), and the step is submitted on the same connection: no claim."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("pass")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        registry = ExecutorRegistry({"local": lambda _: LocalExecutor(cluster="local", grace_seconds=1)})
        dispatcher = Dispatcher(counting, registry, WorksetPlanner(settings), "test-scheduler")
        start = await counter.count()
        assert await Admitter(counting, settings, "test-scheduler", dispatcher).admit_next() is not None
        spent = counter.transactions[start:]
    finally:
        await counting.close()
    assert await state_of(pool, ws_id) == "running"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM step_runs WHERE workset_id = $1", ws_id) == "running"
    assert len(spent) == 2, spent  # the admission with the step, then its job handle
    # The admission: its lock, the queues waiting with the clusters and the regions, the head with the workset's
    # read and lock and the dispatcher's reads (the tenant's buckets, the steps done: the cluster's row came with
    # the clusters), and the save that also writes the lease, the run it starts and the step's row (was 9: the
    # dispatcher's reads, the save, the lease and the row apart; then 6, the head, the workset and the clusters
    # apart).
    admission = [s for s in spent[0] if not _asyncpg_introspection(s)]
    assert len(admission) == 4, admission
    assert sum("FOR UPDATE OF w" in s for s in admission) == 1, admission
    assert not any("WHERE w.id = $1" in s for s in admission), admission  # the workset is not read again
    # The job handle: stored with the lock given back, the workset's move to running and its events, in one
    # statement outside BEGIN … COMMIT (was a transaction of two: the handle with the workset's read, the save).
    handle = [s for s in spent[1] if not _asyncpg_introspection(s)]
    assert len(handle) == 1, handle
    assert await _event_types(pool, ws_id) == [
        "workset.submitted", "workset.queued", "workset.scheduled", "workset.started", "workset.step_started"
    ]  # fmt: skip


class CancelAskedDuringSubmission(LocalExecutor):
    """Submits the step while a cancel of its workset is asked (the workset's row changes meanwhile)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(cluster="local", grace_seconds=1)
        self._pool = pool

    async def submit(self, step: StepSpec) -> JobHandle:
        await request_cancel(self._pool, step.workset_id, actor="alice")
        return await super().submit(step)


async def test_a_first_step_whose_workset_changed_during_its_submission_is_recorded_all_the_same(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The one statement that stores a first step's handle checks the workset's version: a workset changed since
    admission committed it (a cancel asked) is read again and recorded in a transaction, with the change kept."""
    settings = settings_for(tmp_path, [{"name": "one", "argv": script("import time; time.sleep(30)")}])
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    registry = ExecutorRegistry({"local": lambda _: CancelAskedDuringSubmission(pool)})
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), "test-scheduler")
    assert await Admitter(pool, settings, "test-scheduler", dispatcher).admit_next() is not None
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, cancel_requested_by FROM worksets WHERE id = $1", ws_id)
        step = await conn.fetchrow("SELECT state, handle FROM step_runs WHERE workset_id = $1", ws_id)
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    assert row is not None and step is not None
    assert (row["state"], row["cancel_requested_by"]) == ("running", "alice")
    assert step["state"] == "running" and step["handle"] is not None
    assert held == 0, "the step run's lock was given back"
    assert (await _event_types(pool, ws_id))[-2:] == ["workset.started", "workset.step_started"]
    # The monitor carries the cancel out.
    loop = in_process_scheduler(pool, settings)
    deadline = asyncio.get_running_loop().time() + 30
    while await state_of(pool, ws_id) != "cancelled":
        await loop.tick()
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)


async def _event_types(pool: asyncpg.Pool, ws_id: str) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    docs = [json.loads(bytes(r["body"])) for r in rows]
    return [d["type"] for d in docs if d["workset_id"] == ws_id]


def _asyncpg_introspection(statement: str) -> bool:
    return "typeinfo_tree" in statement or "set_config('jit'" in statement
