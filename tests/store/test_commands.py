"""Commands on worksets against the real store: archive, and purge of a dead letter through it."""

from __future__ import annotations

import asyncpg
import pytest

from stamen import commands
from stamen.domain.lifecycle import WorksetState
from stamen.intake import submit_workset
from stamen.store.unit_of_work import UnitOfWork

S = WorksetState


async def workset_in(pool: asyncpg.Pool, *path: WorksetState) -> str:
    result = await submit_workset(
        pool, tenant_id="acme", name="w", spec={}, region="us-west-2", source="cli", actor="t"
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(result.workset_id, for_update=True)
        for state in path:
            ws.transition(state, actor="t")
        await uow.worksets.save(ws)
        if ws.state is S.DEAD_LETTERED:
            await uow.dead_letters.park(ws.id, ws.tenant_id, "exhausted", 2, "WS-NET-001")
        await uow.commit()
    return result.workset_id


async def test_archive_takes_finished_worksets_only(pool: asyncpg.Pool) -> None:
    done = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.COMPLETED)
    assert await commands.archive(pool, done, actor="alice") == "archived"
    running = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING)
    with pytest.raises(commands.WorksetNotArchivable):
        await commands.archive(pool, running, actor="alice")
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(running)).state is S.RUNNING
        assert (await uow.worksets.history(done))[-1].actor == "alice"


async def test_purging_a_dead_letter_archives_it_and_empties_the_queue(pool: asyncpg.Pool) -> None:
    parked = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED, S.DEAD_LETTERED)
    async with UnitOfWork(pool) as uow:
        assert (await uow.dead_letters.get(parked)) is not None
    await commands.purge_dead_letter(pool, parked, actor="operator")
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(parked)).state is S.ARCHIVED
        assert await uow.dead_letters.get(parked) is None and await uow.dead_letters.list() == []
    failed = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED)
    with pytest.raises(commands.WorksetNotRequeueable):
        await commands.purge_dead_letter(pool, failed, actor="operator")
