"""The portal's own tables (migration 0017): browser sessions and sign-up invitations. SQL only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from stamen.store.db import Connection


@dataclass(frozen=True)
class SessionRow:
    id_hash: str
    subject: str
    username: str | None
    token: str
    refresh_token: str | None
    token_expires_at: datetime
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


class SessionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(
        self,
        *,
        id_hash: str,
        subject: str,
        username: str | None,
        token: str,
        refresh_token: str | None,
        token_expires_at: datetime,
        expires_at: datetime,
    ) -> None:
        await self._conn.execute(
            """INSERT INTO portal_sessions (id_hash, subject, username, token, refresh_token,
                                            token_expires_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            id_hash,
            subject,
            username,
            token,
            refresh_token,
            token_expires_at,
            expires_at,
        )

    async def live(self, id_hash: str, idle_seconds: float) -> SessionRow | None:
        """The session, unless it expired or sat unused for longer than `idle_seconds`."""
        row = await self._conn.fetchrow(
            """SELECT * FROM portal_sessions WHERE id_hash = $1 AND expires_at > now()
                 AND last_seen_at > now() - make_interval(secs => $2)""",
            id_hash,
            idle_seconds,
        )
        return SessionRow(**dict(row)) if row else None

    async def touch(self, id_hash: str) -> None:
        await self._conn.execute(
            "UPDATE portal_sessions SET last_seen_at = now() WHERE id_hash = $1", id_hash
        )

    async def renew_tokens(
        self, id_hash: str, *, token: str, refresh_token: str | None, token_expires_at: datetime
    ) -> None:
        await self._conn.execute(
            """UPDATE portal_sessions SET token = $2, refresh_token = coalesce($3, refresh_token),
                      token_expires_at = $4, last_seen_at = now() WHERE id_hash = $1""",
            id_hash,
            token,
            refresh_token,
            token_expires_at,
        )

    async def delete(self, id_hash: str) -> None:
        await self._conn.execute("DELETE FROM portal_sessions WHERE id_hash = $1", id_hash)

    async def delete_for_subject(self, subject: str) -> int:
        status = await self._conn.execute("DELETE FROM portal_sessions WHERE subject = $1", subject)
        return int(status.split()[-1])

    async def purge_expired(self, idle_seconds: float) -> int:
        status = await self._conn.execute(
            """DELETE FROM portal_sessions
               WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => $1)""",
            idle_seconds,
        )
        return int(status.split()[-1])


@dataclass(frozen=True)
class InvitationRow:
    id: uuid.UUID
    customer_id: str
    email: str
    invited_by: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None


class InvitationRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(
        self, *, customer_id: str, email: str, token_hash: str, invited_by: str, expires_at: datetime
    ) -> InvitationRow:
        row = await self._conn.fetchrow(
            """INSERT INTO portal_invitations (id, customer_id, email, token_hash, invited_by, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING id, customer_id, email, invited_by, created_at, expires_at, accepted_at""",
            uuid.uuid4(),
            customer_id,
            email,
            token_hash,
            invited_by,
            expires_at,
        )
        assert row is not None
        return InvitationRow(**dict(row))

    async def open_by_token(self, token_hash: str) -> InvitationRow | None:
        row = await self._conn.fetchrow(
            """SELECT id, customer_id, email, invited_by, created_at, expires_at, accepted_at
               FROM portal_invitations WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now()""",
            token_hash,
        )
        return InvitationRow(**dict(row)) if row else None

    async def accept(self, invitation_id: uuid.UUID) -> bool:
        status = await self._conn.execute(
            "UPDATE portal_invitations SET accepted_at = now() WHERE id = $1 AND accepted_at IS NULL",
            invitation_id,
        )
        return status == "UPDATE 1"

    async def for_customer(self, customer_id: str, limit: int = 20) -> list[InvitationRow]:
        rows = await self._conn.fetch(
            """SELECT id, customer_id, email, invited_by, created_at, expires_at, accepted_at
               FROM portal_invitations WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2""",
            customer_id,
            limit,
        )
        return [InvitationRow(**dict(r)) for r in rows]

    async def revoke(self, customer_id: str, invitation_id: uuid.UUID) -> bool:
        status = await self._conn.execute(
            "DELETE FROM portal_invitations WHERE id = $1 AND customer_id = $2 AND accepted_at IS NULL",
            invitation_id,
            customer_id,
        )
        return status == "DELETE 1"
