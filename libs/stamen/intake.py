"""Submitting a workset: the one code path every intake (CLI, API, NATS, S3 drop) goes through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from stamen.domain.workset import Workset
from stamen.store.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class SubmitResult:
    workset_id: str
    created: bool
    state: str


async def submit_workset(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    name: str,
    spec: dict[str, Any],
    region: str,
    source: str,
    actor: str,
    priority: str = "normal",
    idempotency_key: str | None = None,
) -> SubmitResult:
    """Create the workset and its workset.submitted event in one transaction.

    The same idempotency key for the same tenant returns the first workset instead of a second one,
    including when two submissions race (the unique index decides).
    """
    if idempotency_key:
        async with UnitOfWork(pool) as uow:
            existing = await uow.worksets.find_by_idempotency_key(tenant_id, idempotency_key)
        if existing:
            return SubmitResult(existing.id, False, existing.state.value)
    ws = Workset.submit(
        tenant_id=tenant_id,
        name=name,
        region=region,
        spec=spec,
        source=source,
        actor=actor,
        priority=priority,
        idempotency_key=idempotency_key,
    )
    try:
        async with UnitOfWork(pool) as uow:
            await uow.worksets.add(ws)
            await uow.commit()
    except asyncpg.UniqueViolationError:
        if not idempotency_key:
            raise
        async with UnitOfWork(pool) as uow:
            winner = await uow.worksets.find_by_idempotency_key(tenant_id, idempotency_key)
        assert winner is not None
        return SubmitResult(winner.id, False, winner.state.value)
    return SubmitResult(ws.id, True, ws.state.value)
