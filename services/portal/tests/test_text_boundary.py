"""Text the database cannot store (NUL, unpaired surrogates) is refused where it enters the API, naming the
field; a UnicodeEncodeError anywhere else is a server bug: 500 INTERNAL_ERROR with its traceback logged."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from services.portal.api.errors import api_errors
from services.portal.api.text import first_unstorable
from services.portal.tests.conftest import ACME, count
from tests.intake.s3kit import DROP_PREFIX, S3Lab


def test_the_first_unstorable_value_is_named_by_its_path() -> None:
    doc = {
        "name": "ok",
        "samples": [{"id": "s1"}, {"id": "s2", "r1": "s3://b/a\x00.fq"}],
        "labels": {"k": "v"},
    }
    assert first_unstorable(doc, "body") == ("body.samples[1].r1", "a NUL character")
    assert first_unstorable({"labels": {"k\ud800": "v"}}, "body") == (
        "body.labels (a key)",
        "an unpaired surrogate (text that is not valid Unicode, or bytes that are not UTF-8)",
    )
    assert first_unstorable({"a": ["fine", 1, None, 2.5, {"b": "é ✓ 𝄞"}]}, "body") is None
    deep: Any = "x\x00"
    for _ in range(5000):  # deeper than the interpreter's recursion limit
        deep = [deep]
    assert first_unstorable(deep, "body") == ("body" + "[0]" * 5000, "a NUL character")


@pytest.mark.parametrize(
    ("data", "media", "field"),
    [
        (b'{"name": "run\\u0000one", "samples": []}', "application/json", "body.name"),
        (b'{"name": "run", "labels": {"lane": "\\ud800"}}', "application/json", "body.labels.lane"),
        (b'name: run\nsamples:\n  - id: "s\\0"\n', "application/yaml", "body.samples[0].id"),
    ],
)
async def test_a_workset_document_with_unstorable_text_is_refused_naming_the_field(
    client: TestClient[Any, Any], pool: asyncpg.Pool, data: bytes, media: str, field: str
) -> None:
    for path in (
        "/api/v1/worksets",
        "/api/v1/worksets/validate?dry_run=true",
        "/api/v1/worksets/generate-yaml",
    ):
        refused = await client.post(path, data=data, headers={**ACME, "Content-Type": media})
        body = await refused.json()
        assert (refused.status, body["code"], body["details"]) == (
            400,
            "TEXT_NOT_STORABLE",
            {"field": field},
        ), path
        assert body["message"].startswith(f"{field} holds ")
    assert await count(pool) == 0


async def test_path_query_and_header_values_are_checked_before_use(client: TestClient[Any, Any]) -> None:
    path = await client.get("/api/v1/worksets/ws-%00")
    assert (path.status, (await path.json())["details"]) == (400, {"field": "path.workset_id"})
    cluster = await client.post(
        "/api/v1/clusters", json={"name": "c-1", "region": "us-west-2", "config": {"partition": "a\u0000"}}
    )
    assert (cluster.status, (await cluster.json())["details"]) == (400, {"field": "body.config.partition"})
    # A cursor that decodes to a workset id with NUL is not one this API gave out.
    cursor = base64.urlsafe_b64encode(b"2025-01-01T00:00:00+00:00|ws\x00").decode().rstrip("=")
    listed = await client.get("/api/v1/worksets", params={"cursor": cursor})
    assert (listed.status, (await listed.json())["code"]) == (400, "INVALID_PARAMETER")

    # A header value that is not UTF-8 (http.client sends latin-1 bytes as they are): aiohttp keeps the
    # bad byte as a surrogate, which would break on its way to the database.
    def raw_get() -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
        try:
            conn.request("GET", "/api/v1/worksets", headers={"X-Stamen-Tenant": "acm\xe9"})
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            conn.close()

    status, body = await asyncio.to_thread(raw_get)
    assert (status, body["code"], body["details"]) == (
        400,
        "TEXT_NOT_STORABLE",
        {"field": "header.X-Stamen-Tenant"},
    )


async def test_an_s3_event_key_with_nul_is_refused(client: TestClient[Any, Any], s3lab: S3Lab) -> None:
    key = f"{DROP_PREFIX}run%00one/daylily.ready"  # event keys are URL-encoded: this decodes to a NUL
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": s3lab.bucket}, "object": {"key": key}},
            }
        ]
    }
    refused = await client.post("/api/v1/s3-events", json=event)
    body = await refused.json()
    assert (refused.status, body["code"]) == (400, "TEXT_NOT_STORABLE")
    assert body["details"] == {"field": "body.Records[].s3.object.key"}


async def test_a_unicode_error_the_server_makes_is_a_500_not_the_clients_fault() -> None:
    async def broken(_: web.Request) -> web.Response:
        encoded = "caf\udce9".encode()  # e.g. server-made text on its way to the database
        raise AssertionError(encoded)

    app = web.Application(middlewares=[api_errors])
    app.router.add_get("/api/v1/broken", broken)
    async with TestClient(TestServer(app)) as test_client:
        with capture_logs() as logs:
            answer = await test_client.get("/api/v1/broken")
            body = await answer.json()
    assert (answer.status, body["code"]) == (500, "INTERNAL_ERROR")
    [logged] = [entry for entry in logs if entry["event"] == "api.internal_error"]
    assert logged["log_level"] == "error" and logged["exc_info"] is True
