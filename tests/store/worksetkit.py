"""Worksets put straight into a state on the real store, for tests of the store's operations."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from stamen.domain.lifecycle import WorksetState
from stamen.intake import submit_workset
from stamen.retry import GiveUpReason
from stamen.store.unit_of_work import UnitOfWork

S = WorksetState
TO_FAILED = (S.VALIDATING, S.QUEUED, S.SCHEDULED, S.RUNNING, S.FAILED)
TO_DEAD_LETTERED = (*TO_FAILED, S.DEAD_LETTERED)


async def workset_in(
    pool: asyncpg.Pool,
    *path: WorksetState,
    tenant: str = "acme",
    attempt: int = 0,
    retry_count: int = 0,
    max_retries: int = 3,
    spec: dict[str, Any] | None = None,
) -> str:
    result = await submit_workset(
        pool, tenant_id=tenant, name="w", spec=spec or {}, region="us-west-2", source="cli", actor="t"
    )
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(result.workset_id, for_update=True)
        for state in path:
            ws.transition(state, actor="t")
        ws.attempt, ws.retry_count, ws.max_retries = attempt, retry_count, max_retries
        await uow.worksets.save(ws)
        if ws.state is S.DEAD_LETTERED:
            await uow.dead_letters.park(
                ws.id, ws.tenant_id, GiveUpReason.RETRIES_EXHAUSTED, attempt, "WS-NET-001"
            )
        await uow.commit()
    return result.workset_id


async def events_of(pool: asyncpg.Pool, workset_id: str) -> list[dict[str, Any]]:
    """The workset's events in the outbox, oldest first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    docs = [json.loads(bytes(r["body"])) for r in rows]
    return [d for d in docs if d["workset_id"] == workset_id]
