"""Connection pools."""

from __future__ import annotations

import asyncpg
import asyncpg.pool


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=60)
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
