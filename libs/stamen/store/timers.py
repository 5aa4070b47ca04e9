"""Durable timers (the `timers` table): a retry's due time, survives restarts; fired once by whichever
scheduler claims it. Every due time is by the database's clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.store.db import Connection


@dataclass(frozen=True)
class DueTimer:
    id: int
    workset_id: str
    kind: str
    due_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class RetryableWorkset:
    """A workset waiting for its next attempt, and when it is due."""

    workset_id: str
    tenant_id: str
    failed_attempt: int
    retry_count: int
    max_retries: int
    memory_multiplier: float
    due_at: datetime


class TimerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def due_in(self, seconds: float) -> datetime:
        """Now + `seconds` by the database's clock (the clock every due time and age here is read by)."""
        due: datetime = await self._conn.fetchval(
            "SELECT clock_timestamp() + make_interval(secs => $1)", seconds
        )
        return due

    async def add_timer(self, workset_id: str, kind: str, due_at: datetime, payload: dict[str, Any]) -> None:
        await self._conn.execute(
            """INSERT INTO timers (workset_id, kind, due_at, payload) VALUES ($1, $2, $3, $4::jsonb)
               ON CONFLICT DO NOTHING""",
            workset_id,
            kind,
            due_at,
            json.dumps(payload),
        )

    async def claim_due_timers(self, limit: int = 50) -> list[DueTimer]:
        rows = await self._conn.fetch(
            """SELECT * FROM timers WHERE fired_at IS NULL AND due_at <= now()
               ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [
            DueTimer(r["id"], r["workset_id"], r["kind"], r["due_at"], json.loads(r["payload"])) for r in rows
        ]

    async def postpone_timer(self, timer_id: int, seconds: float) -> None:
        await self._conn.execute(
            "UPDATE timers SET due_at = clock_timestamp() + make_interval(secs => $2) WHERE id = $1",
            timer_id,
            seconds,
        )

    async def mark_timer_fired(self, timer_id: int) -> None:
        await self._conn.execute("UPDATE timers SET fired_at = now() WHERE id = $1", timer_id)

    async def next_timer_due(self) -> datetime | None:
        due: datetime | None = await self._conn.fetchval(
            "SELECT min(due_at) FROM timers WHERE fired_at IS NULL"
        )
        return due

    async def timers_for(self, workset_id: str) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(
            "SELECT * FROM timers WHERE workset_id = $1 ORDER BY due_at", workset_id
        )
        return [dict(r) for r in rows]

    async def get_retryable_worksets(
        self, *, tenant_id: str | None = None, due_by: datetime | None = None, limit: int = 100
    ) -> list[RetryableWorkset]:
        """Worksets in retry_wait with the due time of their retry, soonest first (`due_by`: only those
        due by then)."""
        rows = await self._conn.fetch(
            """SELECT w.id, w.tenant_id, w.attempt, w.retry_count, w.max_retries, w.memory_multiplier,
                      min(t.due_at) AS due_at
               FROM worksets w JOIN timers t
                 ON t.workset_id = w.id AND t.kind = 'retry' AND t.fired_at IS NULL
               WHERE w.state = 'retry_wait' AND ($1::text IS NULL OR w.tenant_id = $1)
               GROUP BY w.id
               HAVING ($2::timestamptz IS NULL OR min(t.due_at) <= $2)
               ORDER BY min(t.due_at), w.id LIMIT $3""",
            tenant_id,
            due_by,
            limit,
        )
        return [
            RetryableWorkset(
                workset_id=r["id"],
                tenant_id=r["tenant_id"],
                failed_attempt=r["attempt"],
                retry_count=r["retry_count"],
                max_retries=r["max_retries"],
                memory_multiplier=r["memory_multiplier"],
                due_at=r["due_at"],
            )
            for r in rows
        ]
