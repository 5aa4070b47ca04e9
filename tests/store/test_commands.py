"""Commands on worksets against the real store: archive, and purge of a dead letter through it."""

from __future__ import annotations

import asyncpg
import pytest

from stamen import commands
from stamen.store.unit_of_work import UnitOfWork
from tests.store.worksetkit import TO_DEAD_LETTERED, TO_FAILED, S, workset_in


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
    parked = await workset_in(pool, *TO_DEAD_LETTERED)
    async with UnitOfWork(pool) as uow:
        assert (await uow.dead_letters.get(parked)) is not None
    await commands.purge_dead_letter(pool, parked, actor="operator")
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(parked)).state is S.ARCHIVED
        assert await uow.dead_letters.get(parked) is None and await uow.dead_letters.list() == []
    failed = await workset_in(pool, *TO_FAILED)
    with pytest.raises(commands.WorksetNotRequeueable):
        await commands.purge_dead_letter(pool, failed, actor="operator")


async def test_requeue_applies_changes_to_the_workset_and_its_spec(pool: asyncpg.Pool) -> None:
    parked = await workset_in(pool, *TO_DEAD_LETTERED)
    state = await commands.requeue(
        pool,
        parked,
        actor="alice",
        changes={"max_retries": 5, "max_duration_seconds": 600, "memory_multiplier": 2},
    )
    assert state == "queued"
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(parked)
        history = await uow.worksets.history(parked)
        assert await uow.dead_letters.list() == []
    assert (ws.max_retries, ws.max_duration_seconds, ws.memory_multiplier, ws.retry_count) == (5, 600, 2.0, 0)
    assert ws.spec == {"max_retries": 5, "max_duration_seconds": 600}
    assert history[-1].actor == "alice" and "max_retries=5" in history[-1].reason


@pytest.mark.parametrize(
    "changes,field,why",
    [
        ({"samples": []}, "samples", "cannot be changed on requeue"),
        ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
        ({"max_retries": "five"}, "max_retries", "valid integer"),
        ({"priority": "asap"}, "priority", "'urgent', 'normal' or 'low'"),
    ],
)
async def test_requeue_refuses_a_bad_change_before_writing_anything(
    pool: asyncpg.Pool, changes: dict[str, object], field: str, why: str
) -> None:
    parked = await workset_in(pool, *TO_DEAD_LETTERED)
    with pytest.raises(commands.RequeueChangesInvalid, match=why) as caught:
        await commands.requeue(pool, parked, actor="alice", changes=changes)
    assert caught.value.code == "REQUEUE_CHANGE_INVALID" and caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    async with UnitOfWork(pool) as uow:
        assert (await uow.worksets.get(parked)).state is S.DEAD_LETTERED
        assert [d["workset_id"] for d in await uow.dead_letters.list()] == [parked]


async def test_requeue_refuses_a_workset_that_is_not_failed(pool: asyncpg.Pool) -> None:
    running = await workset_in(pool, S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING)
    with pytest.raises(commands.WorksetNotRequeueable) as caught:
        await commands.requeue(pool, running, actor="alice")
    assert caught.value.code == "WORKSET_NOT_REQUEUEABLE"
