"""ApiKeyRepository: every SQL statement about API keys. Every query that touches one key also names
its tenant, so one tenant can never see, use or revoke another's key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.store.db import Connection


@dataclass(frozen=True)
class ApiKeyRecord:
    id: uuid.UUID
    customer_id: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class StoredKey:
    record: ApiKeyRecord
    hash: str
    customer_status: str


def _record(r: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=r["id"],
        customer_id=r["customer_id"],
        name=r["name"],
        prefix=r["prefix"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
        last_used_at=r["last_used_at"],
    )


class ApiKeyRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def insert(
        self,
        *,
        key_id: uuid.UUID,
        customer_id: str,
        name: str,
        key_hash: str,
        prefix: str,
        expires_at: datetime,
    ) -> ApiKeyRecord | None:
        """None when the tenant already has a live key with this name."""
        row = await self._conn.fetchrow(
            """INSERT INTO api_keys (id, customer_id, name, hash, prefix, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (customer_id, name) WHERE revoked_at IS NULL DO NOTHING
               RETURNING *""",
            key_id,
            customer_id,
            name,
            key_hash,
            prefix,
            expires_at,
        )
        return _record(row) if row else None

    async def by_prefix(self, prefix: str) -> StoredKey | None:
        row = await self._conn.fetchrow(
            """SELECT k.*, c.status AS customer_status FROM api_keys k
               JOIN customers c ON c.customer_id = k.customer_id WHERE k.prefix = $1""",
            prefix,
        )
        return StoredKey(_record(row), row["hash"], row["customer_status"]) if row else None

    async def for_customer(self, customer_id: str, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        rows = await self._conn.fetch(
            """SELECT * FROM api_keys WHERE customer_id = $1 AND ($2 OR revoked_at IS NULL)
               ORDER BY created_at, id""",
            customer_id,
            include_revoked,
        )
        return [_record(r) for r in rows]

    async def get(self, customer_id: str, key_id: uuid.UUID) -> ApiKeyRecord | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM api_keys WHERE customer_id = $1 AND id = $2", customer_id, key_id
        )
        return _record(row) if row else None

    async def revoke(self, customer_id: str, key_id: uuid.UUID, at: datetime) -> ApiKeyRecord | None:
        """Idempotent: revoking a revoked key keeps its first revocation time."""
        row = await self._conn.fetchrow(
            """UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3)
               WHERE customer_id = $1 AND id = $2 RETURNING *""",
            customer_id,
            key_id,
            at,
        )
        return _record(row) if row else None

    async def touch(self, key_id: uuid.UUID, at: datetime, *, granularity_seconds: float) -> None:
        """Record use, at most once per `granularity_seconds` per key (no write on every request)."""
        await self._conn.execute(
            """UPDATE api_keys SET last_used_at = $2
               WHERE id = $1
                 AND (last_used_at IS NULL
                      OR last_used_at < $2::timestamptz - make_interval(secs => $3::double precision))""",
            key_id,
            at,
            granularity_seconds,
        )
