"""Keep nats-server's authorization include file equal to what PostgreSQL says, and reload the server.

Used by the embedded launcher (which owns its nats-server) and by `stamen nats-auth render --watch`
next to a production server. PostgreSQL NOTIFY wakes it on every change; a periodic pass covers a
missed notification (e.g. while the connection was being re-established).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from stamen.natsauth.authorization import ServiceUser, render_authorization
from stamen.natsauth.repository import NOTIFY_CHANNEL, NatsCredentialRepository

log = structlog.get_logger(__name__)


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace `path` (mode 0600: it holds the service password's hash) when `text` differs."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
    return True


async def render_to_file(conn: asyncpg.Connection, service: ServiceUser, path: Path) -> bool:
    keys = await NatsCredentialRepository(conn).allowed_keys()
    return write_if_changed(path, render_authorization(service, keys))


class NatsAuthSync:
    """Re-render on every NOTIFY (and every `resync_seconds`); call `reload` when the file changed."""

    def __init__(
        self,
        database_url: str,
        service: ServiceUser,
        path: Path,
        reload: Callable[[], None],
        *,
        resync_seconds: float = 30.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self._dsn = database_url
        self._service = service
        self._path = path
        self._reload = reload
        self._resync = resync_seconds
        self.renders = 0  # how many times the file changed; for status and tests
        self._reload_pending = False
        self._retry_seconds = retry_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._listen(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("nats_auth.sync_failed", error=str(exc), retry_in=2)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2)

    async def _listen(self, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            while not stop.is_set():
                wake.clear()
                if await render_to_file(conn, self._service, self._path):
                    self.renders += 1
                    log.info("nats_auth.rendered", path=str(self._path))
                    self._reload_pending = True
                if self._reload_pending:
                    # Until a reload succeeds the server still runs the old block (a revoked key would
                    # stay valid), so a failed one is tried again soon, whether the file changes or not.
                    try:
                        self._reload()
                        self._reload_pending = False
                    except OSError as exc:
                        log.error("nats_auth.reload_failed", error=str(exc), retry_in=self._retry_seconds)
                wake_in = self._retry_seconds if self._reload_pending else self._resync
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=wake_in, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await conn.close()
