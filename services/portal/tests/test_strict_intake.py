"""Strict values and idempotency that means it, over HTTP on the real portal (PostgreSQL, NATS, moto): a key
given twice, a non-finite number or a boolean where a number belongs is a finding naming the field (never a
500); a reused Idempotency-Key with another document is refused with a stable code; a body that never
finishes or does not parse is answered in the API's JSON format within a bounded time, echoing nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import structlog
import yaml
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

from services.portal.app import init_app
from services.portal.tests.conftest import ACME, count
from stamen.auth import AuthSettings
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings

BODY_TIMEOUT = 1.0


@pytest.fixture
async def portal(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestClient[Any, Any]]:
    await grant(pool, "acme", s3lab.bucket)  # the lab bucket is acme's
    app = init_app(
        make_settings(database_url, nats_url, s3lab.url),
        intake=make_intake(s3lab, api_body_timeout_seconds=BODY_TIMEOUT),
        auth=AuthSettings(auth_enabled=False),
    )
    async with TestClient(TestServer(app)) as client:
        yield client


def spec_yaml(s3lab: S3Lab, **extra: str) -> str:
    lines = yaml.safe_dump(s3lab.spec("strict")).rstrip("\n").split("\n")
    return "\n".join([*lines, *(f"{k}: {v}" for k, v in extra.items())]) + "\n"


async def refused_findings(
    client: TestClient[Any, Any], body: str | bytes, media: str, path: str = "/api/v1/worksets"
) -> list[tuple[str, str, str]]:
    answer = await client.post(path, data=body, headers={**ACME, "Content-Type": media})
    doc = await answer.json()
    if "/validate" in path:
        assert answer.status == 200 and not doc["ok"], doc
        found = doc["findings"]
    else:
        assert answer.status == 422 and doc["code"] == "VALIDATION_FAILED", doc
        found = doc["details"]["findings"]
    return [(f["code"], f["field"], f["message"]) for f in found if f["severity"] == "error"]


@pytest.mark.parametrize("path", ["/api/v1/worksets", "/api/v1/worksets/validate?dry_run=true"])
async def test_values_that_would_be_misread_are_findings(
    portal: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool, path: str
) -> None:
    # YAML: a key twice (the second wins silently elsewhere), infinity, a boolean as a count.
    twice = spec_yaml(s3lab, max_retries="2") + "max_retries: 5\n"
    [(code, field, message)] = await refused_findings(portal, twice, "application/yaml", path)
    line = twice.split("\n").index("max_retries: 5") + 1
    assert (code, field) == ("VAL-INPUT-009", "max_retries")
    assert (
        message.startswith(f"line {line}: key 'max_retries' appears twice")
        and f"first at line {line - 1}" in message
    )
    assert await refused_findings(
        portal, spec_yaml(s3lab, max_cost_usd=".inf"), "application/yaml", path
    ) == [("VAL-TYPE-002", "max_cost_usd", "Input should be a finite number")]
    assert await refused_findings(portal, spec_yaml(s3lab, max_retries="true"), "application/yaml", path) == [
        ("VAL-TYPE-001", "max_retries", "true is a boolean; give a number")
    ]
    # JSON: the same three, 1e999 being JSON's way to write infinity.
    spec = json.dumps(s3lab.spec("strict"))
    doubled = spec[:-1] + ',\n "name": "other"}'
    [(code, field, message)] = await refused_findings(portal, doubled, "application/json", path)
    assert (code, field) == ("VAL-INPUT-009", "name") and message.startswith(
        "line 2: key 'name' appears twice"
    )
    for raw, expected in (
        ('"max_cost_usd": 1e999', ("VAL-TYPE-002", "max_cost_usd", "Input should be a finite number")),
        ('"max_retries": true', ("VAL-TYPE-001", "max_retries", "true is a boolean; give a number")),
    ):
        assert await refused_findings(portal, spec[:-1] + f", {raw}}}", "application/json", path) == [
            expected
        ]
    assert await count(pool) == 0


async def test_an_idempotency_key_reused_with_another_document_is_refused(
    portal: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    spec = s3lab.spec("lims-7")
    headers = {**ACME, "Idempotency-Key": "lims-7"}
    first = await portal.post("/api/v1/worksets", json=spec, headers=headers)
    assert first.status == 201
    workset_id = (await first.json())["workset_id"]
    # The same document, keys in another order and as YAML: the same request, the same workset.
    again = await portal.post(
        "/api/v1/worksets",
        data=yaml.safe_dump(dict(reversed(spec.items()))),
        headers={**headers, "Content-Type": "application/yaml"},
    )
    assert again.status == 200 and (await again.json())["workset_id"] == workset_id
    changed = await portal.post("/api/v1/worksets", json={**spec, "max_retries": 1}, headers=headers)
    doc = await changed.json()
    assert changed.status == 422 and doc["code"] == "IDEMPOTENCY_KEY_REUSED", doc
    assert doc["details"] == {"workset_id": workset_id} and "use a new key" in doc["message"]
    assert await count(pool) == 1


async def raw_request(
    client: TestClient[Any, Any], data: bytes, *, then: bytes = b"", wait: float = 10.0
) -> tuple[bytes, float]:
    """Send bytes straight to the portal's socket; returns what it answered and how long that took."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    started = time.monotonic()
    writer.write(data)
    await writer.drain()
    if then:
        await asyncio.sleep(0.3)
        writer.write(then)
        await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = head + await asyncio.wait_for(reader.readexactly(length), wait)
    finally:
        writer.close()
    return answer, time.monotonic() - started


def json_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, head
    return status, json.loads(body)


POST = b"POST /api/v1/worksets HTTP/1.1\r\nHost: t\r\nX-Stamen-Tenant: acme\r\nContent-Type: application/json\r\n"


async def test_bodies_that_never_finish_or_do_not_parse_get_json_errors_in_bounded_time(
    portal: TestClient[Any, Any], pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"Q" * 100_000
    with structlog.testing.capture_logs() as logs:
        # Content-Length longer than what is sent: answered when the body deadline passes, not held.
        answer, took = await raw_request(portal, POST + b'Content-Length: 1000\r\n\r\n{"name": ')
        status, doc = json_error(answer)
        assert (status, doc["code"]) == (408, "REQUEST_TIMEOUT") and BODY_TIMEOUT <= took < BODY_TIMEOUT + 5
        # A chunked body that stops being valid after it started: the same deadline.
        answer, took = await raw_request(
            portal, POST + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n', then=b"ZZ" + garbage + b"\r\n"
        )
        assert json_error(answer)[0] == 408 and took < BODY_TIMEOUT + 5
        # Malformed chunked encoding seen by the HTTP parser: JSON, and none of the 100 KB echoed.
        answer, _ = await raw_request(
            portal, POST + b"Transfer-Encoding: chunked\r\n\r\nZZ" + garbage + b"\r\n"
        )
        status, doc = json_error(answer)
        assert (status, doc["code"]) == (400, "BAD_REQUEST") and "chunked" in doc["message"]
        assert b"QQQQ" not in answer and len(answer) < 1000
        # A header over aiohttp's 8190-byte line limit (e.g. a runaway Authorization header).
        answer, _ = await raw_request(portal, POST + b"Authorization: Bearer " + garbage[:9000] + b"\r\n\r\n")
        status, doc = json_error(answer)
        assert (status, doc["code"]) == (431, "REQUEST_HEADER_TOO_LARGE") and b"QQQQ" not in answer
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # aiohttp's own logger
    assert await count(pool) == 0
