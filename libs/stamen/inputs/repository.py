"""IntakeRepository: every SQL statement of intake (S3 drops seen, validation reports)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from stamen.store.db import Connection
from stamen.store.worksets import SavedWith

# What became of a drop folder stamen handled (s3_drops.outcome; its CHECK).
RecordedDropOutcome = Literal["submitted", "refused"]


@dataclass(frozen=True)
class DropRecord:
    bucket: str
    folder: str
    ready_etag: str
    ready_modified: datetime
    tenant_id: str
    workset_id: str | None
    outcome: RecordedDropOutcome
    sentinel: str
    findings: list[dict[str, Any]]


_VALIDATION_COLUMNS = "(workset_id, ok, findings, estimate, note)"
_VALIDATION_UPSERT = """ON CONFLICT (workset_id) DO UPDATE SET ok = EXCLUDED.ok, findings = EXCLUDED.findings,
    estimate = EXCLUDED.estimate, note = EXCLUDED.note, validated_at = now()"""


def _validation_args(
    workset_id: str,
    ok: bool,
    findings: list[dict[str, Any]],
    estimate: dict[str, Any] | None,
    note: str | None,
) -> tuple[Any, ...]:
    return workset_id, ok, json.dumps(findings), json.dumps(estimate) if estimate is not None else None, note


class IntakeRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def seen_ready_etags(self, bucket: str, folder: str | None = None) -> dict[str, set[str]]:
        """folder -> ETags of daylily.ready already handled (one query per bucket and pass)."""
        rows = await self._conn.fetch(
            "SELECT folder, ready_etag FROM s3_drops WHERE bucket = $1 AND ($2::text IS NULL OR folder = $2)",
            bucket, folder,
        )  # fmt: skip
        seen: dict[str, set[str]] = {}
        for row in rows:
            seen.setdefault(row["folder"], set()).add(row["ready_etag"])
        return seen

    async def record_drop(self, drop: DropRecord) -> bool:
        """False when another watcher (or the event endpoint) recorded this ready version first."""
        status = await self._conn.execute(
            """INSERT INTO s3_drops (bucket, folder, ready_etag, ready_modified, tenant_id, workset_id, outcome,
                                     findings, sentinel)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
               ON CONFLICT (bucket, folder, ready_etag) DO NOTHING""",
            drop.bucket, drop.folder, drop.ready_etag, drop.ready_modified, drop.tenant_id, drop.workset_id,
            drop.outcome, json.dumps(drop.findings), drop.sentinel,
        )  # fmt: skip
        return bool(status == "INSERT 0 1")

    async def drop_for_workset(self, workset_id: str) -> DropRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM s3_drops WHERE workset_id = $1 ORDER BY seen_at DESC LIMIT 1", workset_id
        )
        if row is None:
            return None
        return DropRecord(
            bucket=row["bucket"],
            folder=row["folder"],
            ready_etag=row["ready_etag"],
            ready_modified=row["ready_modified"],
            tenant_id=row["tenant_id"],
            workset_id=row["workset_id"],
            outcome=row["outcome"],
            sentinel=row["sentinel"],
            findings=json.loads(row["findings"]),
        )

    async def dropped_worksets(self, workset_ids: Sequence[str]) -> set[str]:
        """Which of `workset_ids` came from an S3 drop folder: one statement for many (the sentinels'
        consumer asks it of every terminal workset, and almost none was dropped)."""
        rows = await self._conn.fetch(
            "SELECT DISTINCT workset_id FROM s3_drops WHERE workset_id = ANY($1::text[])", list(workset_ids)
        )
        return {row["workset_id"] for row in rows}

    async def mark_sentinel(self, workset_id: str, sentinel: str) -> None:
        await self._conn.execute(
            "UPDATE s3_drops SET sentinel = $2, updated_at = now() WHERE workset_id = $1",
            workset_id,
            sentinel,
        )

    async def save_validation(
        self,
        workset_id: str,
        *,
        ok: bool,
        findings: list[dict[str, Any]],
        estimate: dict[str, Any] | None,
        note: str | None,
    ) -> None:
        await self._conn.execute(
            f"""INSERT INTO workset_validations {_VALIDATION_COLUMNS} VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)
                {_VALIDATION_UPSERT}""",
            *_validation_args(workset_id, ok, findings, estimate, note),
        )

    @staticmethod
    def saving_validation(
        workset_id: str,
        *,
        ok: bool,
        findings: list[dict[str, Any]],
        estimate: dict[str, Any] | None,
        note: str | None,
    ) -> SavedWith:
        """`save_validation` written by the statement that saves the workset (the validator's decision),
        only if that save goes through: one round trip fewer."""
        return SavedWith(
            f"""validation AS (
                 INSERT INTO workset_validations {_VALIDATION_COLUMNS}
                 SELECT $1::text, $2::boolean, $3::jsonb, $4::jsonb, $5::text
                 WHERE EXISTS (SELECT 1 FROM updated) {_VALIDATION_UPSERT})""",
            _validation_args(workset_id, ok, findings, estimate, note),
        )

    async def validation_for(self, workset_id: str) -> dict[str, Any] | None:
        row = await self._conn.fetchrow("SELECT * FROM workset_validations WHERE workset_id = $1", workset_id)
        if row is None:
            return None
        return {
            "ok": row["ok"],
            "findings": json.loads(row["findings"]),
            "estimate": json.loads(row["estimate"]) if row["estimate"] is not None else None,
            "note": row["note"],
            "validated_at": row["validated_at"].isoformat(),
        }
