"""Real servers for tests: PostgreSQL and NATS from their wheels on free ports, in temporary folders.

Set DATABASE_URL / NATS_URL to run the same suite against external servers instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.subjects import STREAMS
from stamen.stack.servers import NatsServer, PostgresServer
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations

warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def environment_as_it_was() -> Iterator[None]:
    """What code under test sets in os.environ does not reach later tests: a CLI command run in-process
    points AWS_ENDPOINT_URL at its stack's emulator, long gone (its port perhaps another server's) by the
    time a later test starts a service that inherits the environment."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    server = PostgresServer(tmp_path_factory.mktemp("pg"), database="postgres").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres_admin_url: str) -> Iterator[str]:
    """A database migrated once per session, which each test's database is copied from (CREATE DATABASE
    ... TEMPLATE copies files: a tenth of the time the migrations take)."""
    name = f"t_template_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(postgres_admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(postgres_admin_url.rsplit("/", 1)[0] + f"/{name}")
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def database_url(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A new, migrated database per test (a copy of the session's migrated template), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def empty_database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=10)
    yield p
    await p.close()


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh nats-server per test (it starts in ~0.1 s); with NATS_URL, the streams are reset instead."""
    external = os.environ.get("NATS_URL")
    if external:
        nc = await connect_nats(external, name="test-reset")
        js = nc.jetstream()
        for definition in STREAMS:
            try:
                await js.delete_stream(definition.name)
            except Exception:
                pass
        await nc.close()
        yield external
        return
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect_nats(nats_url, name="test")
    await ensure_streams(client.jetstream(), dedup_window_seconds=600)
    yield client
    await client.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    """A migrated PostgreSQL of the test's own, to stop, kill and start again (the shared one must stay up)."""
    server = PostgresServer(tmp_path / "pg").start()
    conn = await asyncpg.connect(server.url)
    await apply_migrations(conn)
    await conn.close()
    try:
        yield server
    finally:
        server.stop()
