"""The portal's pages over HTTP on the API tests' world (real PostgreSQL, NATS and moto's S3 and Cognito,
two onboarded tenants): browsers are aiohttp sessions with their own cookie jars, signed in through the
sign-in form like a person."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import asyncpg
import pytest

from stamen.auth import ApiKeyService
from stamen.stack.servers import NatsServer
from stamen.store.db import create_pool
from stamen.store.migrate import apply_migrations
from tests.api.conftest import World, onboard, settings_for, start
from tests.auth.cognito_lab import PASSWORD, CognitoLab
from tests.customers.awskit import moto_endpoint
from tests.intake.s3kit import make_intake, make_settings

__all__ = ["Browser", "World", "moto_endpoint", "world"]


@pytest.fixture(scope="package")
async def world(
    postgres_admin_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One portal for every test here (the API tests' world, built once): its own database and NATS
    server, two onboarded tenants. Tests add what they need under unique names and leave the rest alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(database_url)
    await apply_migrations(conn)
    await conn.close()
    nats = NatsServer(tmp_path_factory.mktemp("web-nats")).start()
    pool = await create_pool(database_url, max_size=10)
    lab = await CognitoLab.create(moto_endpoint)
    auth, customers = settings_for(lab, moto_endpoint, database_url)
    keys = ApiKeyService(pool, auth)
    a = await onboard(pool, customers, keys, lab, "tenant-a")
    b = await onboard(pool, customers, keys, lab, "tenant-b")
    _, op_tokens = await lab.user(None, operator=True)
    client = await start(make_settings(database_url, nats.url, moto_endpoint), make_intake(), auth, customers)
    try:
        yield World(client, a, b, op_tokens.id_token, lab, auth, pool)
    finally:
        await client.close()
        await pool.close()
        nats.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A cookie-keeping HTTP client that reads CSRF tokens off the pages it gets, as a browser would."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.csrf = ""

    async def get(self, path: str, **kwargs: object) -> tuple[int, str]:
        async with self.session.get(path, allow_redirects=False, **kwargs) as r:  # type: ignore[arg-type]
            text = await r.text()
            if found := _CSRF.search(text):
                self.csrf = found.group(1)
            return r.status, text

    async def post(
        self, path: str, data: dict[str, object] | list[tuple[str, str]] | None = None, **kwargs: object
    ) -> aiohttp.ClientResponse:
        if not self.csrf:
            await self.get("/signin")
        fields = list(data.items()) if isinstance(data, dict) else list(data or [])
        form = [("csrf_token", self.csrf), *((k, str(v)) for k, v in fields)]
        response = await self.session.post(path, data=form, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
        await response.read()
        return response

    async def sign_in(self, email: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        await self.get("/signin")
        response = await self.post("/signin", {"email": email, "password": password, "next": "/"})
        await self.get("/")  # a fresh CSRF token: signing in replaced the browser's value
        return response


@pytest.fixture(scope="package")
def browser(world: World) -> Callable[[], AbstractAsyncContextManager[Browser]]:
    """Make a new browser (own cookies) on the world's portal."""

    @asynccontextmanager
    async def new() -> AsyncIterator[Browser]:
        async with aiohttp.ClientSession(
            base_url=str(world.client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as session:
            yield Browser(session)

    return new
