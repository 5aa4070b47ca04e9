"""Two replicas, one workset: a dispatcher's claim decides from its statement's snapshot whether a
workset has a step active, then takes the row lock. Another replica's monitor or admission that records
the next step and commits between the two leaves a claim that is out of date by the time it holds the
row. The dispatcher asks again under the lock; before it did, it recorded the same step a second time
and its transaction died on step_runs' unique key (seen in the soak, where it cost a pass each time)."""

from __future__ import annotations

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
