"""The outbox table: events written in the same transaction as the state change that caused them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

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


class OutboxWriter:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(self, events: Sequence[Envelope]) -> None:
        if not events:
            return
        await self._conn.executemany(
            "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, $2, $3::jsonb, $4)",
            [
                (e.id, event_subject(e.tenant_id, e.type), json.dumps(e.headers()), e.to_json())
                for e in events
            ],
        )


class OutboxQueue:
    """The relay's side: claim unpublished rows (other relays skip them) and mark them sent."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, limit: int) -> list[OutboxRow]:
        rows = await self._conn.fetch(
            """SELECT id, event_id, subject, headers, body FROM outbox
               WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [
            OutboxRow(r["id"], str(r["event_id"]), r["subject"], json.loads(r["headers"]), bytes(r["body"]))
            for r in rows
        ]

    async def mark_published(self, ids: Sequence[int]) -> None:
        await self._conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
        )

    async def purge_published(self, older_than_days: float) -> int:
        """Published rows are only history; keep them a while for debugging, then drop them."""
        status = await self._conn.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
            older_than_days * 86400,
        )
        return int(status.split()[-1])
