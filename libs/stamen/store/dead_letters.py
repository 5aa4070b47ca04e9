"""Dead letters: dead-lettered worksets (the `dead_letters` table). Not the STAMEN_DLQ stream's parked messages
(stamen.bus.parked, stamen.store.parked): those are events no consumer could handle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stamen.retry import GiveUpReason
from stamen.store.db import Connection


class DeadLetterRepository:
    """Worksets stamen will not retry (budget used up, not retryable, retries off): dead-lettered, for an
    operator to inspect, requeue or purge. `reason` is a stamen.retry.GiveUpReason value, `detail` its sentence."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def park(
        self,
        workset_id: str,
        tenant_id: str,
        reason: GiveUpReason,
        attempts: int,
        last_code: str | None,
        detail: str = "",
    ) -> None:
        await self._conn.execute(
            """INSERT INTO dead_letters (workset_id, tenant_id, reason, attempts, last_code, detail)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (workset_id) DO UPDATE SET reason = $3, attempts = $4, last_code = $5, detail = $6,
                   parked_at = now(), requeued_at = NULL, requeued_by = NULL""",
            workset_id,
            tenant_id,
            reason.value,
            attempts,
            last_code,
            detail,
        )

    async def reasons_for(self, workset_ids: Sequence[str]) -> dict[str, str]:
        """workset id -> reason, for those of `workset_ids` that are dead-lettered now (listings)."""
        rows = await self._conn.fetch(
            "SELECT workset_id, reason FROM dead_letters WHERE workset_id = ANY($1::text[]) AND requeued_at IS NULL",
            list(workset_ids),
        )
        return {r["workset_id"]: r["reason"] for r in rows}

    async def list(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            """SELECT * FROM dead_letters WHERE requeued_at IS NULL AND ($1::text IS NULL OR tenant_id = $1)
               ORDER BY parked_at""",
            tenant_id,
        )
        return [dict(r) for r in rows]

    async def get(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM dead_letters WHERE workset_id = $1 AND requeued_at IS NULL", workset_id
        )
        return dict(row) if row else None

    async def mark_requeued(self, workset_id: str, actor: str) -> None:
        await self._conn.execute(
            "UPDATE dead_letters SET requeued_at = now(), requeued_by = $2 WHERE workset_id = $1",
            workset_id,
            actor,
        )

    async def purge(self, workset_id: str) -> bool:
        return bool(
            await self._conn.execute("DELETE FROM dead_letters WHERE workset_id = $1", workset_id)
            == "DELETE 1"
        )
