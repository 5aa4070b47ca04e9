"""What a submission costs in PostgreSQL round trips: the workset, its history and its workset.submitted
outbox row are one statement, atomic on its own, so it is sent without BEGIN and COMMIT around it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from stamen.intake import submit_workset
from stamen.store.db import create_pool


class Statements:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self._logged)

    def _logged(self, record: LoggedQuery) -> None:
        self.sent.append(" ".join(record.query.split()).split(" ", 1)[0].rstrip(";").upper())


@pytest.fixture
async def statements(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, Statements]]:
    seen = Statements()
    counting = await create_pool(database_url, init=seen.init)
    try:
        yield counting, seen
    finally:
        await counting.close()


async def submit(pool: asyncpg.Pool, key: str | None, name: str = "w") -> bool:
    result = await submit_workset(
        pool, tenant_id="acme", name=name, spec={"name": name}, region="us-west-2", source="api", actor="t",
        idempotency_key=key,
    )  # fmt: skip
    return result.created


async def test_a_submission_is_one_statement(
    statements: tuple[asyncpg.Pool, Statements], pool: asyncpg.Pool
) -> None:
    counting, seen = statements
    assert await submit(counting, None, name="warm")  # asyncpg's first use of the types reads pg_type
    seen.sent.clear()
    assert await submit(counting, None)
    assert seen.sent == ["WITH"]  # was BEGIN, the statement, COMMIT
    seen.sent.clear()
    # With an idempotency key: the lookup, then the statement; a repeat is the lookup alone.
    assert await submit(counting, "k-1", name="v")
    assert not await submit(counting, "k-1", name="v")
    assert seen.sent == ["SELECT", "WITH", "SELECT"]
    assert await pool.fetchval("SELECT count(*) FROM worksets") == 3
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 3
    assert await pool.fetchval("SELECT count(*) FROM workset_history") == 3


async def test_a_submission_that_fails_leaves_nothing_behind(pool: asyncpg.Pool) -> None:
    """The one statement is all or nothing: a refused workset row takes its history and event with it."""
    await pool.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'refused'; END $$"
    )
    await pool.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON workset_history FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    with pytest.raises(asyncpg.RaiseError):
        await submit(pool, None)
    for table in ("worksets", "workset_history", "outbox"):
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
