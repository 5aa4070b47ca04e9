"""The embedded NATS server's authorization: the services' password, the rendered include file, and a
background thread that re-renders it from PostgreSQL and reloads the server when credentials change."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncpg

from stamen.natsauth.authorization import ServiceUser
from stamen.natsauth.sync import NatsAuthSync, render_to_file
from stamen.stack.secrets import secret_file
from stamen.stack.servers import NatsServer

AUTH_FILE = "auth.conf"
PASSWORD_FILE = "service.password"


def service_password(nats_dir: Path) -> str:
    """The services' NATS password: made once per state folder (mode 0600), then reused across restarts."""
    return secret_file(nats_dir / PASSWORD_FILE)


def render_once(database_url: str, service: ServiceUser, path: Path) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await render_to_file(conn, service, path)
        finally:
            await conn.close()

    asyncio.run(run())


class NatsAuthThread:
    """Runs NatsAuthSync on its own event loop, beside the launcher's synchronous supervision loop."""

    def __init__(self, database_url: str, service: ServiceUser, nats: NatsServer) -> None:
        assert nats.auth_file is not None
        self.sync = NatsAuthSync(database_url, service, nats.auth_file, nats.reload)
        self._thread = threading.Thread(target=self._main, name="nats-auth-sync", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.sync.run(self._stop)

        asyncio.run(run())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
