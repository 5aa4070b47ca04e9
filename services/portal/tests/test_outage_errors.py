"""A request that fails while PostgreSQL does not answer is a 503 the client can retry, not a 500: the
API asks PostgreSQL itself (the service's dependency probe), it does not guess from the error."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.portal.api.errors import api_errors
from stamen.service.dependencies import Dependency
from stamen.service.keys import POSTGRES


async def _client(probe_fails: bool) -> TestClient[web.Request, web.Application]:
    async def probe() -> None:
        if probe_fails:
            raise ConnectionRefusedError("connect call failed")

    async def submit(_: web.Request) -> web.Response:
        raise ConnectionResetError("connection was closed in the middle of operation")

    app = web.Application(middlewares=[api_errors])
    app[POSTGRES] = Dependency("postgres", probe)
    app.router.add_post("/api/v1/worksets", submit)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_a_database_outage_is_503_with_retry_after() -> None:
    client = await _client(probe_fails=True)
    try:
        response = await client.post("/api/v1/worksets")
        body = await response.json()
        assert response.status == 503 and body["code"] == "DATABASE_UNAVAILABLE"
        assert response.headers["Retry-After"] == "2"
    finally:
        await client.close()


async def test_the_same_error_with_the_database_answering_is_a_500() -> None:
    client = await _client(probe_fails=False)
    try:
        response = await client.post("/api/v1/worksets")
        assert response.status == 500 and (await response.json())["code"] == "INTERNAL_ERROR"
    finally:
        await client.close()
