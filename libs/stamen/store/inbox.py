"""The inbox: one row per (consumer, event) so a redelivered event has no second effect."""

from __future__ import annotations

import uuid

from stamen.store.db import Connection


class Inbox:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        """True the first time; False if this consumer already handled the event (commit-bound)."""
        status = await self._conn.execute(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            consumer,
            event_id,
        )
        return bool(status == "INSERT 0 1")

    async def claimed(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Whether this consumer has handled the event (a committed claim, or one of this transaction)."""
        return bool(
            await self._conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2)",
                consumer,
                event_id,
            )
        )

    async def purge(self, older_than_days: float) -> int:
        """Claims older than the events stream's max age can never be redelivered, so they can go."""
        status = await self._conn.execute(
            "DELETE FROM inbox WHERE processed_at < now() - make_interval(secs => $1)",
            older_than_days * 86400,
        )
        return int(status.split()[-1])
