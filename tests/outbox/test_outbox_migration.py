"""The migration that has published rows leave the outbox, on a database that held them (real PostgreSQL):
the published ones go, the waiting and the parked ones stay, in order, for the relay."""

from __future__ import annotations

import json
import uuid

import asyncpg

from stamen.store.migrate import apply_migrations, packaged_migrations

DELETE_ON_PUBLISH = "0022_outbox_rows_leave_when_published"


async def test_published_rows_go_and_waiting_ones_stay(empty_database_url: str) -> None:
    migrations = packaged_migrations()
    before = [m for m in migrations if m.version < DELETE_ON_PUBLISH]
    conn = await asyncpg.connect(empty_database_url)
    try:
        await apply_migrations(conn, before)
        ids = [uuid.uuid4() for _ in range(4)]
        for event_id in ids:
            await conn.execute(
                "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, 's', $2, '\\x7b7d')",
                event_id,
                json.dumps({"Nats-Msg-Id": str(event_id)}),
            )
        await conn.execute("UPDATE outbox SET published_at = now() WHERE event_id = ANY($1::uuid[])", ids[:2])
        await conn.execute("UPDATE outbox SET parked_at = now() WHERE event_id = $1", ids[3])

        assert DELETE_ON_PUBLISH in await apply_migrations(conn)
        left = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM outbox ORDER BY id")]
        assert left == ids[2:]
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox'")}  # fmt: skip
        assert "published_at" not in columns
    finally:
        await conn.close()
