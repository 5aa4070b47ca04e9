"""NatsCredentialRepository: every SQL statement about NATS credentials. Each query about one credential
also names its tenant, so one tenant can never see or revoke another's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.natsauth.authorization import TenantKey
from stamen.store.db import Connection

NOTIFY_CHANNEL = "stamen_nats_auth"


@dataclass(frozen=True)
class NatsCredentialRecord:
    id: uuid.UUID
    customer_id: str
    name: str
    public_key: str
    created_at: datetime
    revoked_at: datetime | None


def _record(r: Any) -> NatsCredentialRecord:
    return NatsCredentialRecord(
        id=r["id"],
        customer_id=r["customer_id"],
        name=r["name"],
        public_key=r["public_key"],
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
    )


class NatsCredentialRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def insert(
        self, *, credential_id: uuid.UUID, customer_id: str, name: str, public_key: str
    ) -> NatsCredentialRecord | None:
        """None when the tenant already has a live credential with this name."""
        row = await self._conn.fetchrow(
            """INSERT INTO nats_credentials (id, customer_id, name, public_key) VALUES ($1, $2, $3, $4)
               ON CONFLICT (customer_id, name) WHERE revoked_at IS NULL DO NOTHING
               RETURNING *""",
            credential_id,
            customer_id,
            name,
            public_key,
        )
        return _record(row) if row else None

    async def for_customer(
        self, customer_id: str, *, include_revoked: bool = False
    ) -> list[NatsCredentialRecord]:
        rows = await self._conn.fetch(
            """SELECT * FROM nats_credentials WHERE customer_id = $1 AND ($2 OR revoked_at IS NULL)
               ORDER BY created_at, id""",
            customer_id,
            include_revoked,
        )
        return [_record(r) for r in rows]

    async def revoke(
        self, customer_id: str, credential_id: uuid.UUID, at: datetime
    ) -> NatsCredentialRecord | None:
        """Idempotent: revoking a revoked credential keeps its first revocation time."""
        row = await self._conn.fetchrow(
            """UPDATE nats_credentials SET revoked_at = coalesce(revoked_at, $3)
               WHERE customer_id = $1 AND id = $2 RETURNING *""",
            customer_id,
            credential_id,
            at,
        )
        return _record(row) if row else None

    async def allowed_keys(self) -> list[TenantKey]:
        """The keys nats-server should accept: live credentials of active customers."""
        rows = await self._conn.fetch(
            """SELECT n.customer_id, n.public_key FROM nats_credentials n
               JOIN customers c ON c.customer_id = n.customer_id
               WHERE n.revoked_at IS NULL AND c.status = 'active'
               ORDER BY n.customer_id, n.public_key"""
        )
        return [TenantKey(tenant_id=r["customer_id"], public_key=r["public_key"]) for r in rows]
