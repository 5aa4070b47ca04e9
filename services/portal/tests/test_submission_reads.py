"""What the API's submission reads about its tenant: the customer row (the storage quota) and the tenant's
buckets (what the document may name) in one statement, as the validator reads them, not two."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

import stamen.service.contexts
from services.portal.app import init_app
from services.portal.tests.conftest import ACME
from stamen.auth import AuthSettings
from stamen.store.db import create_pool
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings


@pytest.fixture
async def logged(
    database_url: str,
    nats_url: str,
    s3lab: S3Lab,
    nc: NATS,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[TestClient[Any, Any], list[str]]]:
    """The portal (local demo, as services/portal/tests' client) whose pool logs every statement it sends."""
    await grant(pool, "acme", s3lab.bucket)
    sent: list[str] = []

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(" ".join(record.query.split())))

    async def logging_pool(dsn: str, **kwargs: Any) -> asyncpg.Pool:
        return await create_pool(dsn, init=init, **kwargs)

    monkeypatch.setattr(stamen.service.contexts, "create_pool", logging_pool)
    app = init_app(
        make_settings(database_url, nats_url, s3lab.url), intake=make_intake(s3lab),
        auth=AuthSettings(auth_enabled=False),
    )  # fmt: skip
    async with TestClient(TestServer(app)) as client:
        yield client, sent


async def test_a_submission_reads_its_tenant_in_one_statement(
    logged: tuple[TestClient[Any, Any], list[str]], s3lab: S3Lab
) -> None:
    client, sent = logged
    sent.clear()
    response = await client.post("/api/v1/worksets", json=s3lab.spec("reads-once"), headers=ACME)
    assert response.status == 201, await response.text()
    about_tenant = [s for s in sent if "customers" in s or "bucket_grants" in s]
    assert len(about_tenant) == 1, about_tenant  # was two: the customer row, then the buckets
    assert "customers" in about_tenant[0] and "bucket_grants" in about_tenant[0]
    assert sum(s.startswith("WITH added AS") for s in sent) == 1  # the submission itself
