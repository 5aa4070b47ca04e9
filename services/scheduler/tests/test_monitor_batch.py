"""The monitor records every step end a poll finds in one transaction (and stores the next steps' job
handles in one statement), skips an end another replica is recording, and falls back to one
transaction per end when the batch fails, so that one end that cannot be recorded holds up no other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.dispatch import Dispatcher, Submission
from services.scheduler.executors import ExecutorRegistry
from services.scheduler.monitor import JobMonitor
from services.scheduler.planning import WorksetPlanner
from services.scheduler.tests.support import add_cluster, enqueue
from services.scheduler.tests.test_scheduler_local import outbox_types, script, settings_for
from stamen.domain.workset import Workset
from stamen.executors.base import JobHandle
from stamen.executors.local import LocalExecutor
from stamen.settings import Settings
from stamen.store.db import create_pool
from stamen.store.step_runs import STEP_RUN_LOCK_CLASS
from stamen.store.unit_of_work import UnitOfWork
from tests.transactions import TransactionCounter

WORKSETS = 3


async def _first_steps_ended(
    pool: asyncpg.Pool, tmp_path: Path
) -> tuple[Settings, ExecutorRegistry, list[str]]:
    """WORKSETS worksets of two quick steps, admitted with their first step submitted, once every first
    step's job has ended (nothing recorded yet)."""
    settings = settings_for(
        tmp_path, [{"name": "one", "argv": script("pass")}, {"name": "two", "argv": script("pass")}]
    )
    await add_cluster(pool, workdir=tmp_path / "work", max_concurrent=WORKSETS)
    ids = [await enqueue(pool, tenant) for tenant in ("acme", "beta", "gamma")]  # a slot each
    executor = LocalExecutor(cluster="local", grace_seconds=1)
    registry = ExecutorRegistry({"local": lambda _: executor})
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), "test-scheduler")
    assert len(await Admitter(pool, settings, "test-scheduler", dispatcher).admit_all()) == WORKSETS
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        async with pool.acquire() as conn:
            handles = await conn.fetch("SELECT handle FROM step_runs WHERE state = 'running'")
        statuses = await executor.poll([JobHandle.model_validate_json(r["handle"]) for r in handles])
        if len(statuses) == WORKSETS and all(s.state.finished for s in statuses.values()):
            return settings, registry, ids
        assert asyncio.get_running_loop().time() < deadline, statuses
        await asyncio.sleep(0.05)


async def _steps(pool: asyncpg.Pool, ws_id: str) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT step, state FROM step_runs WHERE workset_id = $1 ORDER BY id", ws_id)
    return [(r["step"], r["state"]) for r in rows]


async def _advisory_locks(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        )


def _writes(counter: TransactionCounter) -> list[list[str]]:
    own = [
        [s for s in t if "typeinfo_tree" not in s and "set_config('jit'" not in s]
        for t in counter.transactions
    ]
    return [t for t in own if any(s.startswith(("WITH", "INSERT", "UPDATE", "DELETE")) for s in t)]


async def test_the_ends_a_poll_finds_are_recorded_in_one_transaction(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Three ends: one transaction (the ends with their worksets' reads in one statement, a save each),
    then the three next steps' handles in one statement (it was a transaction and a statement per end)."""
    settings, registry, ids = await _first_steps_ended(pool, tmp_path)
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        dispatcher = Dispatcher(counting, registry, WorksetPlanner(settings), "test-scheduler")
        assert await JobMonitor(counting, registry, "test-scheduler", dispatcher).poll_once() == WORKSETS
    finally:
        await counting.close()
    for ws_id in ids:
        assert await _steps(pool, ws_id) == [("one", "succeeded"), ("two", "running")]
        assert (await outbox_types(pool, ws_id))[-2:] == ["workset.step_completed", "workset.step_started"]
    assert await _advisory_locks(pool) == 0, "every step run's lock was given back"
    recorded, handles = _writes(counter)
    assert len(recorded) == 1 + WORKSETS, recorded  # the ends and the reads, then a save each
    assert len(handles) == 1 and handles[0].startswith("WITH claims AS"), handles  # outside BEGIN … COMMIT


async def test_an_end_another_replica_is_recording_is_skipped_and_the_others_recorded_together(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Another replica holds one step run's lock (it is recording that end): the batch neither waits for
    it nor fails; the other ends are recorded in one transaction, that one is left to its replica."""
    settings, registry, ids = await _first_steps_ended(pool, tmp_path)
    async with pool.acquire() as conn:
        held_id = await conn.fetchval("SELECT id FROM step_runs WHERE workset_id = $1", ids[0])
    other = await asyncpg.connect(database_url)
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        async with other.transaction():
            await other.execute(
                "SELECT pg_advisory_xact_lock($1, ($2::bigint % 2147483647)::int)",
                STEP_RUN_LOCK_CLASS,
                held_id,
            )
            dispatcher = Dispatcher(counting, registry, WorksetPlanner(settings), "test-scheduler")
            monitor = JobMonitor(counting, registry, "test-scheduler", dispatcher)
            assert await asyncio.wait_for(monitor.poll_once(), 30) == WORKSETS - 1
        assert await _steps(pool, ids[0]) == [("one", "running")]
        for ws_id in ids[1:]:
            assert await _steps(pool, ws_id) == [("one", "succeeded"), ("two", "running")]
        recorded = _writes(counter)[0]
        assert len(recorded) == WORKSETS, recorded  # the ends and reads, then the two saves
        # Once the other replica has let it go (without recording it), this one records it.
        assert await monitor.poll_once() >= 1
    finally:
        await counting.close()
        await other.close()
    assert await _steps(pool, ids[0]) == [("one", "succeeded"), ("two", "running")]


async def test_an_end_that_cannot_be_recorded_holds_up_no_other(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One end's outcome raises: the batch's transaction is rolled back, and each end is recorded in a
    transaction of its own; the one that fails is left for a later poll, the others are recorded (they
    used to wait behind it: the poll stopped at the first end that raised, at every pass)."""
    settings, registry, ids = await _first_steps_ended(pool, tmp_path)
    poisoned = sorted(ids)[1]  # neither the first nor the last in the order the ends are recorded
    dispatcher = Dispatcher(pool, registry, WorksetPlanner(settings), "test-scheduler")
    prepare = dispatcher.prepare

    async def failing_prepare(uow: UnitOfWork, ws: Workset, **kwargs: object) -> Submission | None:
        if ws.id == poisoned:
            raise RuntimeError("cannot plan this one")
        return await prepare(uow, ws, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dispatcher, "prepare", failing_prepare)
    monitor = JobMonitor(pool, registry, "test-scheduler", dispatcher)
    assert await monitor.poll_once() == WORKSETS - 1
    assert await _steps(pool, poisoned) == [("one", "running")]  # nothing of its end recorded
    for ws_id in set(ids) - {poisoned}:
        assert await _steps(pool, ws_id) == [("one", "succeeded"), ("two", "running")]
    assert await _advisory_locks(pool) == 0
    monkeypatch.setattr(dispatcher, "prepare", prepare)
    assert await monitor.poll_once() >= 1  # recorded once it can be (and any step two that ended meanwhile)
    assert await _steps(pool, poisoned) == [("one", "succeeded"), ("two", "running")]
