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
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import asyncpg.pool


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


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
) -> asyncpg.Pool:
    """`init` runs on every new connection (e.g. a test's query logger)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        connection_class=SessionTrackingConnection,
        reset=_reset_session,
        init=init,
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
