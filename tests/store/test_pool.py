"""A pooled connection goes back clean without a reset round trip (real PostgreSQL): a plain use sends
nothing on release; a session that LISTENed or took a session advisory lock is reset, so the next user of
the same connection gets neither."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from stamen.customers.repository import CustomerRepository
from stamen.store.db import BUILTIN_ARRAYS, create_pool, know_builtin_arrays, still_open


async def last_statement(admin: asyncpg.Connection, pid: int) -> str:
    return str(await admin.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))


@pytest.mark.filterwarnings("ignore:.*active notification listener:asyncpg.InterfaceWarning")
async def test_release_sends_the_reset_only_after_the_session_kept_state(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)  # one connection: every acquire reuses it
    admin = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            async with conn.transaction():
                await conn.execute("SELECT 'plain work'")
        # The last statement the server saw from that connection is still the work, not a reset.
        assert await last_statement(admin, pid) == "COMMIT;"

        async with pool.acquire() as conn:
            await conn.add_listener("some_channel", lambda *_: None)  # left listening (asyncpg warns)
            await CustomerRepository(conn).lock("acme")  # and a session lock never unlocked
        assert "UNLISTEN *" in await last_statement(admin, pid)

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session, reset
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1", pid
                )
                == 0
            )
        assert (
            await last_statement(admin, pid)
            == "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
        )

        async with pool.acquire() as conn:  # an open transaction left behind is rolled back on release
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE left_open (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await admin.close()
        await pool.close()


async def test_a_held_connection_whose_server_went_away_reads_as_not_open(database_url: str) -> None:
    """The pool takes back a connection that was lost while held, and the proxy then refuses every call,
    is_closed() included: the timer loop and the relay ask still_open() instead, so an outage reads as an
    outage (the timer loop used to log "connection has been released back to the pool")."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    admin = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn:
            assert still_open(conn)
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            # The pool notices the lost socket on its own event, with no statement sent. (A statement sent in
            # the moment between the server's FATAL notice and the socket closing fails with asyncpg's
            # InternalClientError "another operation is in progress": CI saw it, so none is sent here.)
            for _ in range(1000):
                if not still_open(conn):
                    break
                await asyncio.sleep(0.01)
            assert not still_open(conn)
            with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
                await conn.execute("SELECT 1")
            with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):
                conn.is_closed()  # what the timer loop asked, and why it logged that
    finally:
        await admin.close()
        await pool.close()


# A value of each element type, as PostgreSQL reads it.
ARRAY_ELEMENT = {
    "bool": "t", "bytea": "\\x01", "char": "a", "name": "n", "int2": "1", "int4": "1", "bpchar": "a",
    "varchar": "v", "int8": "1", "float4": "1.5", "float8": "1.5", "timestamp": "2026-01-02 03:04:05",
    "date": "2026-01-02", "time": "03:04:05", "timestamptz": "2026-01-02 03:04:05+00", "interval": "1 day",
    "numeric": "1.5", "timetz": "03:04:05+01", "json": '{"a": 1}', "jsonb": '{"a": 1}',
    "uuid": "00000000-0000-0000-0000-000000000001",
}  # fmt: skip


async def test_a_new_connection_knows_the_builtin_arrays_as_postgresql_names_them(database_url: str) -> None:
    """The array types a pooled connection knows without asking are PostgreSQL's, with their elements; each
    one goes to the server and back as it does on a connection that asked (plain asyncpg)."""
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    pool = await create_pool(database_url, min_size=1, max_size=1, init=log_queries)
    plain = await asyncpg.connect(database_url)
    try:
        catalog = await plain.fetch(
            "SELECT oid::int, typname::text, typelem::int, typdelim::text FROM pg_type WHERE oid = ANY($1::oid[])",
            list(BUILTIN_ARRAYS),
        )
        assert {r[0]: (r[1], r[2], r[3]) for r in catalog} == {
            oid: (name, element, ",") for oid, (name, element) in BUILTIN_ARRAYS.items()
        }
        # One value of each array type, typed by the server: the pooled connection decodes all of them
        # and sends each back, the same values as the connection that asked about the types.
        names = [name[1:] for name, _ in BUILTIN_ARRAYS.values()]
        select = "SELECT " + ", ".join(f"ARRAY[{ARRAY_ELEMENT[n]!r}::{n}, NULL]" for n in names)
        expected = list(await plain.fetchrow(select))
        async with pool.acquire() as conn:
            assert list(await conn.fetchrow(select)) == expected
            echo = "SELECT " + ", ".join(f"${i}::{n}[]" for i, n in enumerate(names, 1))
            assert list(await conn.fetchrow(echo, *expected)) == expected
    finally:
        await plain.close()
        await pool.close()
    asked = [s for s in statements if "typeinfo" in s or "set_config('jit'" in s]
    assert not asked, asked


async def test_a_new_connection_still_works_if_asyncpg_lacks_the_private_call_it_is_given_arrays_by(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in arrays are given through asyncpg's private `register_data_types`: an asyncpg without it
    must leave the connection as asyncpg made it (it then asks the server), not fail every connection."""

    class SettingsWithoutIt:
        pass

    conn = await asyncpg.connect(database_url)
    try:
        monkeypatch.setattr(conn._protocol, "get_settings", SettingsWithoutIt, raising=False)
        know_builtin_arrays(conn)  # no error
        monkeypatch.undo()
        assert await conn.fetchval("SELECT $1::int4[]", [1, 2]) == [1, 2]
    finally:
        await conn.close()
