"""Connection pools.

A connection goes back to its pool clean without a round trip: asyncpg's default reset sends
`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release (one more
PostgreSQL transaction per use, the largest share of stamen's transactions when measured). stamen's
code leaves nothing in a session except in the few places that say so: a LISTEN (`add_listener`,
tracked by the connection itself) and the session advisory locks of migrations and customer
onboarding (`keeps_session_state`). Only a connection that did one of those gets the full reset; an
open transaction is rolled back on release either way (asyncpg does that before the reset hook).
Anything new that changes a session (SET, LISTEN in SQL, session locks, WITH HOLD cursors) must call
`keeps_session_state` on its connection.

A new connection knows the arrays of PostgreSQL's built-in types from the start (`know_builtin_arrays`):
asyncpg decodes only text[] and oid[] by itself and asks the server about any other array type
(int4[], uuid[], timestamptz[], jsonb[], ...) the first time a statement of that connection takes or
returns one: a recursive catalog query (~4 ms of PostgreSQL) wrapped in two `set_config('jit')` round
trips, on every new connection, for the statement that saves a workset (its history and outbox rows go
in as arrays) among others.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import asyncpg.pool
import structlog

log = structlog.get_logger(__name__)


class SessionTrackingConnection(asyncpg.Connection):
    """An asyncpg connection that remembers whether its session holds state beyond a transaction."""

    session_state_kept = False

    def keep_session_state(self) -> None:
        self.session_state_kept = True

    def forget_session_state(self) -> None:
        self.session_state_kept = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self.session_state_kept = True
        await super().add_listener(channel, callback)


def keeps_session_state(conn: object) -> None:
    """Say that `conn` (pooled or not) now holds session state, so its pool resets it on release. A
    pool's proxy hands attribute reads to its connection; a plain connection has no pool to reset it."""
    mark = getattr(conn, "keep_session_state", None)
    if mark is not None:
        mark()


def released_session_state(conn: object) -> None:
    """Say that `conn`'s session holds nothing any more (its one session lock was given back): its pool
    need not reset it. Only for a connection whose sole session state its caller knows and released."""
    mark = getattr(conn, "forget_session_state", None)
    if mark is not None:
        mark()


async def _reset_session(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: asyncpg has already rolled back any open transaction and dropped the
    connection's listener callbacks; the server-side reset is sent only when the session kept state."""
    if isinstance(conn, SessionTrackingConnection) and conn.session_state_kept:
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)
        conn.session_state_kept = False


# PostgreSQL's built-in arrays whose element types asyncpg decodes itself: array type oid -> (its name,
# its element's oid). These oids are fixed in PostgreSQL's catalog (pg_type.dat), the same in every
# database; tests/store/test_pool.py checks them against pg_type. The delimiter is ',' for all of them.
BUILTIN_ARRAYS: dict[int, tuple[str, int]] = {
    1000: ("_bool", 16),
    1001: ("_bytea", 17),
    1002: ("_char", 18),
    1003: ("_name", 19),
    1005: ("_int2", 21),
    1007: ("_int4", 23),
    1014: ("_bpchar", 1042),
    1015: ("_varchar", 1043),
    1016: ("_int8", 20),
    1021: ("_float4", 700),
    1022: ("_float8", 701),
    1115: ("_timestamp", 1114),
    1182: ("_date", 1082),
    1183: ("_time", 1083),
    1185: ("_timestamptz", 1184),
    1187: ("_interval", 1186),
    1231: ("_numeric", 1700),
    1270: ("_timetz", 1266),
    199: ("_json", 114),
    2951: ("_uuid", 2950),
    3807: ("_jsonb", 3802),
}


def _array_type_record(oid: int, name: str, element: int) -> dict[str, Any]:
    """What asyncpg's introspection query returns for a built-in array type (the fields it reads)."""
    return {
        "oid": oid,
        "ns": "pg_catalog",
        "name": name,
        "kind": b"b",
        "basetype": None,
        "elemtype": element,
        "elemdelim": ",",
        "range_subtype": None,
        "attrtypoids": None,
        "attrnames": None,
        "depth": 0,
        "basetype_name": None,
        "elemtype_name": name[1:],
        "range_subtype_name": None,
    }


_BUILTIN_ARRAY_RECORDS = tuple(_array_type_record(oid, *known) for oid, known in BUILTIN_ARRAYS.items())


def know_builtin_arrays(conn: asyncpg.Connection) -> None:
    """Give `conn` the codecs of the built-in arrays without asking the server (asyncpg would, once per
    connection and array type). asyncpg has no public call for this: its connection settings'
    `register_data_types` is what its own introspection feeds with the rows read above. Should a later
    asyncpg not have it, the connection works as it did without (asyncpg asks the server, once per
    connection and type): a warning says so, and the test that counts those questions fails."""
    try:
        register = conn._protocol.get_settings().register_data_types  # type: ignore[attr-defined]
    except AttributeError as exc:
        global _warned_no_register
        if not _warned_no_register:
            _warned_no_register = True
            log.warning("db.builtin_arrays_not_registered", asyncpg=asyncpg.__version__, error=str(exc))
        return
    register(_BUILTIN_ARRAY_RECORDS)


_warned_no_register = False


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
) -> asyncpg.Pool:
    """`init` runs on every new connection (e.g. a test's query logger)."""

    async def on_connect(conn: asyncpg.Connection) -> None:
        know_builtin_arrays(conn)
        if init is not None:
            await init(conn)

    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        connection_class=SessionTrackingConnection,
        reset=_reset_session,
        init=on_connect,
    )
    assert pool is not None
    return pool


# Repositories accept a plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


# SQLSTATEs that say the server is unreachable, going away or not accepting connections yet: class 08
# (connection exceptions, asyncpg's PostgresConnectionError), 57P01-57P03 (shut down, crashed,
# starting up) and 53300 (no connection slot). None of them says anything about the work itself.
_UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, no route: the socket itself failed
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def is_unreachable(exc: BaseException) -> bool:
    """True if `exc` (or what caused it) means PostgreSQL could not be reached, rather than that the
    statement or the data was wrong: work that failed this way should wait for the database and run
    again, not count as a failed attempt."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE_ERRORS):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True  # "connection is closed", "pool is closed" after the server went away
        current = current.__cause__ or current.__context__
    return False


def still_open(conn: asyncpg.pool.PoolConnectionProxy) -> bool:
    """Whether a held pool connection still works. When its server goes away (an outage, a failover), the pool
    takes the connection back and the proxy refuses every call, is_closed() included."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
