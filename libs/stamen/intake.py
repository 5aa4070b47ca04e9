"""Submitting a workset: the one code path every intake (CLI, API, NATS, S3 drop) goes through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from stamen.domain.workset import Workset, spec_fingerprint
from stamen.errors import CodedError
from stamen.store.outbox import OutboxWriter
from stamen.store.worksets import WorksetRepository

if TYPE_CHECKING:
    from stamen.bus.announce import Announce


class IntakeRefused(CodedError, ValueError):
    """The submission request itself is unusable (no or a bad tenant, a bad or reused idempotency key):
    each refusal is a subclass with its own stable code and HTTP status; no findings."""


class IdempotencyKeyReused(IntakeRefused):
    """The key was used for a workset with a different spec: the caller means another workset (and needs a
    new key), or sent a changed document by mistake. Never answered with the first workset."""

    code = "IDEMPOTENCY_KEY_REUSED"
    http_status = 422

    def __init__(self, key: str, workset_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was used for workset {workset_id} with a different document; "
            "send the same document to get that workset back, or use a new key for a new workset",
            workset_id=workset_id,
        )
        self.workset_id = workset_id


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
    announce: Announce | None = None,
) -> SubmitResult:
    """Create the workset and its workset.submitted event in one transaction; `announce` publishes the
    event once committed, ahead of the outbox relay (stamen.bus.announce: the validator starts ~30 ms
    sooner; the relay's copy is dropped as a duplicate).

    The same idempotency key for the same tenant returns the first workset instead of a second one,
    including when two submissions race (the unique index decides); the same key with a different spec
    raises IdempotencyKeyReused.
    """
    # Each of the statements below is atomic on its own (the row, its history and its outbox row are one
    # statement), so none is wrapped in BEGIN/COMMIT: two round trips fewer each.
    if idempotency_key:
        existing = await _find_by_key(pool, tenant_id, idempotency_key)
        if existing:
            return _repeat(existing, spec, idempotency_key)
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
    events = list(ws.pending_events)
    try:
        async with pool.acquire() as conn:
            await WorksetRepository(conn, [], OutboxWriter(conn)).add(ws)
    except asyncpg.UniqueViolationError:
        if not idempotency_key:
            raise
        winner = await _find_by_key(pool, tenant_id, idempotency_key)
        assert winner is not None
        return _repeat(winner, spec, idempotency_key)
    if announce is not None:
        await announce(events)
    return SubmitResult(ws.id, True, ws.state.value)


async def _find_by_key(pool: asyncpg.Pool, tenant_id: str, key: str) -> Workset | None:
    async with pool.acquire() as conn:
        return await WorksetRepository(conn, []).find_by_idempotency_key(tenant_id, key)


def _repeat(existing: Workset, spec: dict[str, Any], key: str) -> SubmitResult:
    # Worksets stored before fingerprints were kept have none: nothing to compare them with.
    if existing.idempotency_fingerprint not in (None, spec_fingerprint(spec)):
        raise IdempotencyKeyReused(key, existing.id)
    return SubmitResult(existing.id, False, existing.state.value)
