"""DiagnosisRepository: the diagnoses of failed attempts."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.store.db import Connection


@dataclass(frozen=True)
class DiagnosisRow:
    workset_id: str
    attempt: int
    code: str
    retry_class: str
    retryable: bool
    step: str | None
    candidates: list[dict[str, Any]]
    report: str
    created_at: datetime


class DiagnosisRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def record(
        self,
        *,
        workset_id: str,
        attempt: int,
        event_id: uuid.UUID,
        code: str,
        retry_class: str,
        retryable: bool,
        step: str | None,
        candidates: list[dict[str, Any]],
        report: str,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO diagnoses (workset_id, attempt, event_id, code, retry_class, retryable, step,
                                      candidates, report)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
               ON CONFLICT (workset_id, attempt) DO NOTHING""",
            workset_id,
            attempt,
            event_id,
            code,
            retry_class,
            retryable,
            step,
            json.dumps(candidates),
            report,
        )

    async def get(self, workset_id: str, attempt: int) -> DiagnosisRow | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM diagnoses WHERE workset_id = $1 AND attempt = $2", workset_id, attempt
        )
        return _row(row) if row else None

    async def for_workset(self, workset_id: str) -> list[DiagnosisRow]:
        rows = await self._conn.fetch(
            "SELECT * FROM diagnoses WHERE workset_id = $1 ORDER BY attempt", workset_id
        )
        return [_row(r) for r in rows]


def _row(r: Any) -> DiagnosisRow:
    return DiagnosisRow(
        workset_id=r["workset_id"],
        attempt=r["attempt"],
        code=r["code"],
        retry_class=r["retry_class"],
        retryable=r["retryable"],
        step=r["step"],
        candidates=json.loads(r["candidates"]),
        report=r["report"],
        created_at=r["created_at"],
    )
