"""A pass records the steps that ended before it admits: the slot a finished workset gives back is taken
by the same pass, not the next one (the pass used to admit first and record ends last, so each freed slot
stayed empty for a whole pass, and each next step waited for the pass's admissions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from services.scheduler.executors import ExecutorRegistry
from services.scheduler.planning import default_executor_factories
from services.scheduler.tests.support import add_cluster, enqueue, in_process_scheduler, state_of
from services.scheduler.tests.test_scheduler_local import settings_for


async def test_the_pass_that_records_a_completion_admits_into_its_slot(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, [{"name": "only", "argv": ["true"]}])
    await add_cluster(pool, max_concurrent=1, workdir=tmp_path / "work")
    first = await enqueue(pool, "acme")
    second = await enqueue(pool, "globex")
    registry = ExecutorRegistry(default_executor_factories(settings))
    ended = asyncio.Event()
    registry.on_job_exit(ended.set)
    loop = in_process_scheduler(pool, settings, registry=registry)

    assert await loop.tick()  # admits one (the only slot) and submits its step
    admitted, waiting = (first, second) if await state_of(pool, first) != "queued" else (second, first)
    assert await state_of(pool, waiting) == "queued"
    await asyncio.wait_for(ended.wait(), 30)  # its step has ended; nothing recorded it yet
    assert await state_of(pool, admitted) == "running"

    assert await loop.tick()  # one pass: the end recorded, the slot given back and taken
    assert await state_of(pool, admitted) == "completed"
    assert await state_of(pool, waiting) in ("scheduled", "running")


async def test_a_poll_counts_the_slots_its_ends_gave_back(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A step that is not a workset's last ends without giving its slot back; the last one gives it back."""
    settings = settings_for(tmp_path, [{"name": n, "argv": ["true"]} for n in ("one", "two")])
    await add_cluster(pool, max_concurrent=1, workdir=tmp_path / "work")
    ws_id = await enqueue(pool, "acme")
    registry = ExecutorRegistry(default_executor_factories(settings))
    ended = asyncio.Event()
    registry.on_job_exit(ended.set)
    loop = in_process_scheduler(pool, settings, registry=registry)
    assert await loop.tick()
    outcomes = []
    for _ in range(2):
        await asyncio.wait_for(ended.wait(), 30)
        ended.clear()
        outcomes.append(await loop._monitor.poll_once())
    assert [(o.finished, o.released) for o in outcomes] == [(1, 0), (1, 1)]
    assert await state_of(pool, ws_id) == "completed"
