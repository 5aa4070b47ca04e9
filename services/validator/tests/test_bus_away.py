"""While NATS is away the validator validates from PostgreSQL: a workset the portal recorded during a
NATS outage (its workset.submitted waiting in the outbox) is queued within seconds, not after the
reconciler's STAMEN_RECONCILE_AFTER_SECONDS (60 s)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from services.validator.app import init_app
from stamen.intake import submit_workset
from stamen.stack.ports import free_port
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings

pytestmark = pytest.mark.slow


async def test_submissions_are_validated_from_postgres_while_nats_is_away(
    database_url: str, s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    await grant(pool, "acme", s3lab.bucket)
    nowhere = f"nats://127.0.0.1:{free_port()}"  # no NATS there, for the whole test
    settings = make_settings(database_url, nowhere, s3lab.url)
    assert settings.reconcile_after_seconds >= 60  # the reconciler would not take these in time
    server = TestServer(init_app(settings, intake=make_intake()))
    await server.start_server()
    try:
        submitted = time.monotonic()
        ids = [
            (await submit_workset(pool, tenant_id="acme", name=f"away-{i}", spec=s3lab.spec(f"away-{i}"),
                                  region="us-west-2", source="test", actor="test")).workset_id
            for i in range(3)
        ]  # fmt: skip
        while True:
            async with pool.acquire() as conn:
                rows = await conn.fetch("SELECT state FROM worksets WHERE id = ANY($1::text[])", ids)
            if {r["state"] for r in rows} == {"queued"}:
                break
            assert time.monotonic() - submitted < 20, [r["state"] for r in rows]
            await asyncio.sleep(0.2)
        async with pool.acquire() as conn:
            # Validated once each (their events, when NATS is back, find them queued: no-ops).
            decided = await conn.fetchval(
                "SELECT count(*) FROM workset_history WHERE workset_id = ANY($1::text[]) AND to_state = 'queued'",
                ids,
            )
        assert decided == 3
    finally:
        await server.close()
