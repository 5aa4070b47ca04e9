"""The largest workset on every intake path, through the real servers (PostgreSQL, nats-server, moto) and the
real portal and validator services: 10,000 samples over HTTP, over NATS request/reply and as an S3 drop with
a 10,000-row manifest each reach `queued`, while other tenants' small worksets keep flowing (their
submit->queued latency is printed before and during), and the largest event any of them caused stays small.

Lean by design: the samples share 20 read pairs, so the storage checks cost 40 objects and the run measures
what grows with the workset (documents, rules, events), not S3 round trips."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS

from services.portal.app import init_app as portal_app
from services.validator.app import init_app as validator_app
from stamen.auth import AuthSettings
from stamen.events.types import EVENT_MAX_BYTES
from stamen.worksets.limits import MAX_SAMPLES
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings, moto_url, s3lab
from tests.natskit import tenant_request

__all__ = ["moto_url", "s3lab"]  # fixtures

pytestmark = pytest.mark.slow
PAIRS = 20


@pytest.fixture
async def stack(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestClient[Any, Any]]:
    for tenant in ("acme", "big-lab", "lab-0", "lab-1"):  # every tenant here reads and writes the lab bucket
        await grant(pool, tenant, s3lab.bucket)
    settings = make_settings(database_url, nats_url, s3lab.url)
    validator = TestServer(validator_app(settings, intake=make_intake(s3lab)))
    await validator.start_server()
    portal = TestClient(
        TestServer(portal_app(settings, intake=make_intake(s3lab), auth=AuthSettings(auth_enabled=False)))
    )
    await portal.start_server()
    try:
        yield portal
    finally:
        await portal.close()
        await validator.close()


def samples(s3lab: S3Lab, count: int, prefix: str) -> list[dict[str, Any]]:
    pairs = [s3lab.reads(f"P{i}", count=20) for i in range(PAIRS)]
    return [
        {"id": f"{prefix}{i:05d}", "platform": "ILMN", "r1": pairs[i % PAIRS][0], "r2": pairs[i % PAIRS][1]}
        for i in range(count)
    ]


def spec(s3lab: S3Lab, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "pipeline": "fastq-qc",
        "samples": rows,
        "export_uri": f"s3://{s3lab.bucket}/out/{name}/",
    }


async def submit_small(portal: TestClient[Any, Any], s3lab: S3Lab, tenant: str, name: str) -> str:
    answer = await portal.post(
        "/api/v1/worksets",
        json=spec(s3lab, name, samples(s3lab, 2, "s")),
        headers={"X-Stamen-Tenant": tenant},
    )
    assert answer.status == 201, await answer.text()
    return str((await answer.json())["workset_id"])


async def latencies(pool: asyncpg.Pool, ids: list[str], timeout: float) -> list[float]:
    """submit->queued of each workset, from its history (database clock), once all are queued."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT w.id, w.state, (SELECT max(at) FROM workset_history h WHERE h.workset_id = w.id
                          AND h.to_state = 'queued') - w.created_at AS waited
                   FROM worksets w WHERE w.id = ANY($1::text[])""",
                ids,
            )
        if len(rows) == len(ids) and all(r["state"] == "queued" for r in rows):
            return sorted(r["waited"].total_seconds() for r in rows)
        assert time.monotonic() < deadline, {r["id"]: r["state"] for r in rows}
        await asyncio.sleep(0.1)


async def record_event_sizes(pool: asyncpg.Pool) -> None:
    """Each event's size and workset as it is written to the outbox (published rows leave it)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """CREATE TABLE event_sizes (workset_id TEXT, size INTEGER NOT NULL);
               CREATE FUNCTION record_event_size() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                   INSERT INTO event_sizes
                   VALUES (convert_from(NEW.body, 'UTF8')::jsonb->>'workset_id', octet_length(NEW.body));
                   RETURN NULL;
               END $$;
               CREATE TRIGGER record_event_size AFTER INSERT ON outbox
                   FOR EACH ROW EXECUTE FUNCTION record_event_size();"""
        )


def describe(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})"


async def test_the_largest_workset_reaches_queued_on_every_path_while_others_flow(
    stack: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool, nc: NATS
) -> None:
    portal = stack
    await record_event_sizes(pool)
    before = [await submit_small(portal, s3lab, f"lab-{i % 2}", f"before-{i}") for i in range(4)]
    quiet = await latencies(pool, before, 60)

    started = time.monotonic()
    big_http = spec(s3lab, "big-http", samples(s3lab, MAX_SAMPLES, "H"))
    body = json.dumps(big_http).encode()
    answer = await portal.post(
        "/api/v1/worksets", data=body, headers={"X-Stamen-Tenant": "acme", "Content-Type": "application/json"}
    )
    assert answer.status == 201, await answer.text()
    big_ids = [(await answer.json())["workset_id"]]
    reply = json.loads(
        (
            await tenant_request(
                nc,
                "big-lab",
                json.dumps(spec(s3lab, "big-nats", samples(s3lab, MAX_SAMPLES, "N"))).encode(),
                timeout=60,
                headers={"Content-Type": "application/json"},
            )
        ).data
    )
    assert reply["ok"], reply
    big_ids.append(reply["workset_id"])
    pairs = [s3lab.reads(f"P{i}", count=20) for i in range(PAIRS)]
    manifest = (
        "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tLANE\tSEQ_VENDOR\tSEQ_PLATFORM\tILMN_R1_FQ\tILMN_R2_FQ\n"
        + "".join(
            f"R1\tD{i:05d}\tEX1\t1\tILMN\tNOVASEQX\t{pairs[i % PAIRS][0]}\t{pairs[i % PAIRS][1]}\n"
            for i in range(MAX_SAMPLES)
        )
    )
    folder = s3lab.drop_folder("big-drop", ready=False)
    s3lab.put(folder + "stage_samples.tsv", manifest)
    s3lab.put(folder + "daylily.ready", "2025-01-01T00:00:00Z")

    during = []
    for i in range(6):  # other tenants keep submitting while the three big ones go through
        during.append(await submit_small(portal, s3lab, f"lab-{i % 2}", f"during-{i}"))
        await asyncio.sleep(0.5)
    busy = await latencies(pool, during, 120)
    async with pool.acquire() as conn:
        drop_id = await conn.fetchval("SELECT workset_id FROM s3_drops WHERE folder = $1", folder)
    assert drop_id is not None
    big_ids.append(drop_id)
    big = await latencies(pool, big_ids, 240)
    took = time.monotonic() - started

    async with pool.acquire() as conn:
        counts = [
            await conn.fetchval("SELECT jsonb_array_length(spec->'samples') FROM worksets WHERE id = $1", i)
            for i in big_ids
        ]
        largest = await conn.fetchval(
            "SELECT max(size) FROM event_sizes WHERE workset_id = ANY($1::text[])",
            big_ids,
        )
        pending = await conn.fetchval("SELECT count(*) FROM outbox")
    print(
        f"\nsmall worksets, quiet: submit->queued {describe(quiet)}"
        f"\nsmall worksets, during three {MAX_SAMPLES}-sample worksets: submit->queued {describe(busy)}"
        f"\n{MAX_SAMPLES}-sample worksets (HTTP {len(body) / 1e6:.1f} MB JSON, NATS, S3 drop): submit->queued "
        f"{', '.join(f'{v:.1f} s' for v in big)}; all three queued {took:.1f} s after the first was sent"
        f"\nlargest event of those worksets: {largest} bytes (bound {EVENT_MAX_BYTES})"
    )
    assert counts == [MAX_SAMPLES] * 3
    assert largest < EVENT_MAX_BYTES
    assert pending == 0 or await _drained(pool)


async def _drained(pool: asyncpg.Pool) -> bool:
    """Every event the run caused gets published (no row held back)."""
    for _ in range(100):
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT count(*) FROM outbox") == 0:
                return True
        await asyncio.sleep(0.1)
    return False
