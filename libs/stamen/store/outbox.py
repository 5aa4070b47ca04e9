"""The outbox table: events written in the same transaction as the state change that caused them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.bus.subjects import event_subject
from stamen.events.envelope import Envelope
from stamen.store.db import Connection

NOTIFY_CHANNEL = "stamen_outbox"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    subject: str
    headers: dict[str, str]
    body: bytes
    attempts: int = 0  # failed attempts so far
    created_at: datetime | None = None  # when its event was committed (None: not read)


@dataclass(frozen=True)
class ParkedRow:
    """An event the relay gave up on, for operators: what it is, why, and since when."""

    id: int
    event_id: str
    subject: str
    size_bytes: int
    attempts: int
    last_error: str
    created_at: datetime
    parked_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "subject": self.subject,
            "size_bytes": self.size_bytes,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "parked_at": self.parked_at.isoformat(),
        }


# A workset's events go in with the statement that saves it (`WorksetRepository.save`, `add`): this CTE
# inserts them from the four arrays of `OutboxWriter.columns`, whose placeholders start at `first`.
def outbox_cte(first: int, *, if_exists: str | None = None) -> str:
    """`outbox_rows AS (INSERT ...)` for a WITH list; `if_exists`: a CTE name, the rows go in only if it has one."""
    where = f" WHERE EXISTS (SELECT 1 FROM {if_exists})" if if_exists else ""
    return (
        "outbox_rows AS (INSERT INTO outbox (event_id, subject, headers, body) "
        f"SELECT * FROM unnest(${first}::uuid[], ${first + 1}::text[], ${first + 2}::jsonb[], "
        f"${first + 3}::bytea[]){where})"
    )


def _row(e: Envelope) -> tuple[Any, ...]:
    return (e.id, event_subject(e.tenant_id, e.type), json.dumps(e.headers()), e.to_json())


class OutboxWriter:
    """Writes a unit of work's events: those of a saved workset with its save (one statement fewer per
    transaction), the rest at commit. Each event is written once (`written`)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._written: set[Any] = set()  # event ids already in the transaction

    def unwritten(self, events: Sequence[Envelope]) -> list[Envelope]:
        return [e for e in events if e.id not in self._written]

    @staticmethod
    def columns(events: Sequence[Envelope]) -> list[list[Any]]:
        """The events as the four arrays `outbox_cte` inserts (event_id, subject, headers, body)."""
        return [list(column) for column in zip(*map(_row, events), strict=True)] if events else [[]] * 4

    def written(self, events: Sequence[Envelope]) -> None:
        """These events went in with the caller's statement: `add` leaves them out."""
        self._written.update(e.id for e in events)

    async def add(self, events: Sequence[Envelope]) -> None:
        events = self.unwritten(events)
        if not events:
            return
        await self._conn.executemany(
            "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, $2, $3::jsonb, $4)",
            [_row(e) for e in events],
        )
        self.written(events)


class OutboxQueue:
    """The relay's side: claim waiting rows (other relays skip them), gone from the outbox if its
    transaction commits."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, limit: int) -> list[OutboxRow]:
        """Waiting rows in order, except parked ones and ones waiting out a failed attempt's delay,
        locked (other relays skip them) and deleted in the same statement: the caller's transaction
        commits once the broker has stored them, and rolls back if it could not (the rows are then
        there again). A delete writes nothing but the old version's end, where marking the rows
        published wrote a new version of each (body and index entries included) that a purge deleted
        later. A row the broker refused goes back in with `record_failure`, in the same transaction."""
        rows = await self._conn.fetch(
            """DELETE FROM outbox
               WHERE id IN (SELECT id FROM outbox
                            WHERE parked_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())
                            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING id, event_id, subject, headers, body, attempts, created_at""",
            limit,
        )
        claimed = [
            OutboxRow(
                r["id"],
                str(r["event_id"]),
                r["subject"],
                json.loads(r["headers"]),
                bytes(r["body"]),
                r["attempts"],
                r["created_at"],
            )
            for r in rows
        ]
        claimed.sort(key=lambda row: row.id)  # RETURNING's order is the delete's, not the outbox's
        return claimed

    async def record_failure(self, row: OutboxRow, error: str, *, retry_in: float, park: bool) -> None:
        """One failed attempt at this row (claimed, so deleted, in this transaction: it goes back in with
        its id, so its place in the order, and its creation time): try it again after `retry_in`
        seconds, or park it."""
        await self._conn.execute(
            """INSERT INTO outbox (id, event_id, subject, headers, body, created_at, attempts, last_error,
                                   next_attempt_at, parked_at)
               VALUES ($1, $2, $3, $4::jsonb, $5, coalesce($6, now()), $7, $8, now() + make_interval(secs => $9),
                       CASE WHEN $10 THEN now() END)""",
            row.id, row.event_id, row.subject, json.dumps(row.headers), row.body, row.created_at,
            row.attempts + 1, error[:2000], retry_in, park,
        )  # fmt: skip

    async def parked(self, limit: int = 100) -> list[ParkedRow]:
        rows = await self._conn.fetch(
            """SELECT id, event_id, subject, octet_length(body) AS size, attempts, last_error, created_at,
                      parked_at
               FROM outbox WHERE parked_at IS NOT NULL ORDER BY id LIMIT $1""",
            limit,
        )
        return [
            ParkedRow(
                r["id"],
                str(r["event_id"]),
                r["subject"],
                r["size"],
                r["attempts"],
                r["last_error"] or "",
                r["created_at"],
                r["parked_at"],
            )
            for r in rows
        ]

    async def unpark(self, row_ids: Sequence[int] | None) -> list[int]:
        """Hand parked rows (all of them when None) back to the relays, with a fresh attempt budget."""
        rows = await self._conn.fetch(
            """UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = NULL
               WHERE parked_at IS NOT NULL
                 AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
               RETURNING id""",
            None if row_ids is None else list(row_ids),
        )
        if rows:
            await self._conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        return sorted(r["id"] for r in rows)
