from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

from services.portal.app import init_app
from stamen.auth import AuthSettings
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings, moto_url, s3lab

__all__ = ["ACME", "client", "count", "moto_url", "s3lab"]

ACME = {"X-Stamen-Tenant": "acme"}


@pytest.fixture
async def client(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestClient[Any, Any]]:
    """The portal in local-demo mode (auth off: every request is an operator naming its tenant). The lab
    bucket is acme's (granted read-write), as it is its drop bucket."""
    await grant(pool, "acme", s3lab.bucket)
    app = init_app(
        make_settings(database_url, nats_url, s3lab.url),
        intake=make_intake(s3lab),
        auth=AuthSettings(auth_enabled=False),
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def count(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM worksets"))
