"""Migrations on a real PostgreSQL: fresh, re-run, and concurrent runs give the same schema."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from stamen.store.migrate import (
    Migration,
    MigrationDrift,
    apply_migrations,
    packaged_migrations,
    pending_migrations,
)

SCHEMA_QUERY = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public'
ORDER BY table_name, column_name
"""


async def schema_of(url: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        cols = [tuple(r) for r in await conn.fetch(SCHEMA_QUERY)]
        idx = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname='public' ORDER BY 1"
            )
        ]
        return cols + idx
    finally:
        await conn.close()


async def test_fresh_then_rerun(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await pending_migrations(conn) == [m.version for m in packaged_migrations()]
        first = await apply_migrations(conn)
        assert first == [m.version for m in packaged_migrations()]
        before = await schema_of(empty_database_url)
        assert await apply_migrations(conn) == []
        assert await pending_migrations(conn) == []
        assert await schema_of(empty_database_url) == before
    finally:
        await conn.close()


async def test_concurrent_runs_apply_each_migration_once(empty_database_url: str, database_url: str) -> None:
    conns = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(m.version for m in packaged_migrations())  # each exactly once
    # Same schema as a database migrated the ordinary way (the `database_url` fixture).
    assert await schema_of(empty_database_url) == await schema_of(database_url)


async def test_an_edited_applied_migration_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = packaged_migrations()[0]
        with pytest.raises(MigrationDrift):
            await apply_migrations(conn, [Migration(first.version, first.sql + "\n-- edited")])
    finally:
        await conn.close()
