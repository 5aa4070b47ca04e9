"""Two replicas, one workset: a dispatcher's claim decides from its statement's snapshot whether a
workset has a step active, then takes the row lock. Another replica's monitor or admission that records
the next step and commits between the two leaves a claim that is out of date by the time it holds the
row. The dispatcher asks again under the lock; before it did, it recorded the same step a second time
and its transaction died on step_runs' unique key (seen in the soak, where it cost a pass each time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.admission import Admitter
from services.scheduler.tests.support import add_cluster, enqueue
from services.scheduler.tests.test_dispatch_crash import CountingExecutor, dispatcher, step_rows, two_steps
from stamen.store.step_runs import StepRunRepository


async def test_a_claim_taken_by_another_replica_meanwhile_is_let_go(
    pool: asyncpg.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_steps(tmp_path, align_seconds=5)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    assert await Admitter(pool, settings, "first").admit_all()
    first = CountingExecutor()
    assert await dispatcher(pool, settings, first, "first").dispatch_pending() == 1
    [(step, state, _)] = await step_rows(pool, ws_id)
    assert step == "align" and state in ("pending", "running")

    # The second replica's claim read its snapshot before the first replica's step was committed.
    real_claim = StepRunRepository.claim_undispatched
    stale = [[ws_id]]

    async def claim_from_an_old_snapshot(self: StepRunRepository, limit: int = 20) -> list[str]:
        if stale:
            [claimed] = stale
            stale.clear()
            await self._conn.execute("SELECT 1 FROM worksets WHERE id = $1 FOR UPDATE", ws_id)
            return claimed
        return await real_claim(self, limit)

    monkeypatch.setattr(StepRunRepository, "claim_undispatched", claim_from_an_old_snapshot)
    second = CountingExecutor()
    assert await dispatcher(pool, settings, second, "second").dispatch_pending(reconcile=False) == 0
    assert second.submitted == [] and not stale
    assert [step for step, _, _ in await step_rows(pool, ws_id)] == ["align"]


async def test_a_head_cancelled_while_admission_reads_it_is_not_admitted(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Admission reads the head of the queue in front and locks its workset in one statement; a workset that
    another transaction takes out of the queue meanwhile (here cancelled, committed while admission waits for
    its row) is asked again under the lock and is not admitted: no slot taken, no error, the next head is
    another decision's. (Before, the workset was read again by a statement of its own, found cancelled, and
    the decision failed on the transition cancelled -> scheduled.)"""
    settings = two_steps(tmp_path, align_seconds=5)
    await add_cluster(pool, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    canceller, watcher = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        tx = canceller.transaction()
        await tx.start()
        await canceller.execute(
            "UPDATE worksets SET state = 'cancelled', version = version + 1 WHERE id = $1", ws_id
        )
        admitting = asyncio.ensure_future(
            Admitter(
                pool, settings, "first", dispatcher(pool, settings, CountingExecutor(), "first")
            ).admit_next()
        )
        for _ in range(100):  # until admission waits for the workset's row lock
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT w.*%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting and not admitting.done()
        await tx.commit()
    finally:
        await canceller.close()
        await watcher.close()
    assert await admitting is None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM worksets WHERE id = $1", ws_id) == "cancelled"
        assert await conn.fetchval("SELECT count(*) FROM slot_leases") == 0
        assert await conn.fetchval("SELECT count(*) FROM step_runs") == 0
