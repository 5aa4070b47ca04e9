"""DlqMessageLog: what was done with messages parked in STAMEN_DLQ (the `dlq_message_actions` table)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from stamen.bus.parked import ParkedMessage, ParkedMessageAction
from stamen.store.db import Connection


class DlqMessageLog:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def record(
        self, message: ParkedMessage, *, action: ParkedMessageAction, detail: str, actor: str
    ) -> bool:
        """Claim the parked message for `action`: False if it was acted on already (by anyone)."""
        status = await self._conn.execute(
            """INSERT INTO dlq_message_actions (dlq_msg_id, dlq_seq, consumer, reason, event_id, workset_id,
                                               action, detail, actor)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (dlq_msg_id) DO NOTHING""",
            message.msg_id,
            message.seq,
            message.consumer,
            message.reason,
            message.event_id,
            message.workset_id,
            action,
            detail,
            actor,
        )
        return bool(status == "INSERT 0 1")

    async def acted_on(self, msg_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The actions recorded for these parked copies (their stream copy may not be deleted yet)."""
        rows = await self._conn.fetch(
            "SELECT * FROM dlq_message_actions WHERE dlq_msg_id = ANY($1::text[])", msg_ids
        )
        return {r["dlq_msg_id"]: dict(r) for r in rows}

    async def replays(self, event_id: str, consumer: str) -> int:
        """How often this event was replayed to this consumer already (each parking counts)."""
        value = await self._conn.fetchval(
            """SELECT count(*) FROM dlq_message_actions WHERE event_id = $1 AND consumer = $2
               AND action = 'replayed'""",
            event_id,
            consumer,
        )
        return int(value or 0)

    async def handled_by(self, consumer: str, event_id: str) -> datetime | None:
        """When `consumer` handled this event (its inbox claim), if it did."""
        try:
            key = uuid.UUID(event_id)
        except ValueError:
            return None
        at: datetime | None = await self._conn.fetchval(
            "SELECT processed_at FROM inbox WHERE consumer = $1 AND event_id = $2", consumer, key
        )
        return at

    async def workset_state(self, workset_id: str) -> str | None:
        state: str | None = await self._conn.fetchval("SELECT state FROM worksets WHERE id = $1", workset_id)
        return state
