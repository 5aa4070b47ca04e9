"""Apply the packaged .sql migrations in order, once, even with several processes racing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from stamen.store.db import keeps_session_state

# Any constant works; it only has to be the same for every stamen process on one database.
MIGRATION_LOCK_ID = 0x5354414D454E  # "STAMEN"


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationDrift(RuntimeError):
    code = "MIGRATION_CHECKSUM_MISMATCH"


def packaged_migrations() -> list[Migration]:
    folder = resources.files("stamen.store") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(version=f.name.removesuffix(".sql"), sql=f.read_text()) for f in files]


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Returns the versions applied by this call (empty when the schema was already current)."""
    migrations = packaged_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    # A session-level advisory lock serialises concurrent migrators; the loser waits, then finds
    # every version recorded and applies nothing. Migrations are arbitrary SQL: the session is reset
    # before a pool hands the connection out again.
    keeps_session_state(conn)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version TEXT PRIMARY KEY, checksum TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationDrift(
                        f"migration {m.version} was changed after it was applied; "
                        "add a new migration file instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", m.version, m.checksum
                )
            applied_now.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")} if exists else set()
    )
    return [m.version for m in packaged_migrations() if m.version not in done]
