"""The NATS intake (stamen.intake.<tenant>, real nats-server and validator service) answers the same strict
findings as HTTP: a key twice, a non-finite number, a boolean as a number; and refuses an Idempotency-Key
reused with another document (IDEMPOTENCY_KEY_REUSED) while a true repeat gets the first workset."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from services.validator.app import init_app
from stamen.inputs import sentinels
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings
from tests.natskit import tenant_request


@pytest.fixture
async def validator(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestServer]:
    await grant(pool, "acme", s3lab.bucket)  # the lab bucket is acme's (also its drop bucket)
    server = TestServer(init_app(make_settings(database_url, nats_url, s3lab.url), intake=make_intake(s3lab)))
    await server.start_server()
    yield server
    await server.close()


async def ask(nc: NATS, body: str | bytes, **headers: str) -> dict[str, Any]:
    data = body.encode() if isinstance(body, str) else body
    reply = await tenant_request(nc, "acme", data, headers=headers or None)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_strict_values_and_idempotency_over_nats(
    validator: TestServer, nc: NATS, s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    spec = s3lab.spec("lab-7")
    text = yaml.safe_dump(spec)
    cases = {
        text + "max_retries: 2\nmax_retries: 4\n": ("VAL-INPUT-009", "max_retries"),
        text + "max_cost_usd: .inf\n": ("VAL-TYPE-002", "max_cost_usd"),
        text + "max_retries: true\n": ("VAL-TYPE-001", "max_retries"),
    }
    for body, expected in cases.items():
        answer = await ask(nc, body)
        assert answer["code"] == "VALIDATION_FAILED", answer
        assert [(f["code"], f["field"]) for f in answer["details"]["findings"]] == [expected]
    json_inf = await ask(
        nc, json.dumps(spec)[:-1] + ', "max_cost_usd": 1e999}', **{"Content-Type": "application/json"}
    )
    assert [f["code"] for f in json_inf["details"]["findings"]] == ["VAL-TYPE-002"]

    first = await ask(nc, text, **{"Idempotency-Key": "lims-7"})
    repeat = await ask(
        nc, json.dumps(spec), **{"Idempotency-Key": "lims-7", "Content-Type": "application/json"}
    )
    assert (
        first["ok"] and repeat["ok"] and not repeat["created"] and repeat["workset_id"] == first["workset_id"]
    )
    reused = await ask(nc, yaml.safe_dump({**spec, "priority": "urgent"}), **{"Idempotency-Key": "lims-7"})
    assert reused["code"] == "IDEMPOTENCY_KEY_REUSED" and reused["details"] == {
        "workset_id": first["workset_id"]
    }
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM worksets") == 1


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_s3_drops_name_the_defect(validator: TestServer, s3lab: S3Lab, pool: asyncpg.Pool) -> None:
    """The watcher (real moto) refuses a folder whose files would be misread, with daylily.error saying why;
    a sample id reaching for a parent folder is rejected by the validator, as on every path."""
    twice = s3lab.drop_folder("twice", work="dy-r: -p help\nnotes: first\ndy-r: -p all\n")
    infinite = s3lab.drop_folder("infinite", ready=False)
    s3lab.put(infinite + "daylily_info.yaml", "pipeline_type: fastq-qc\nstamen:\n  max_cost_usd: .inf\n")
    s3lab.put(infinite + "daylily.ready", "2025-01-01T00:00:00Z")
    columns = s3lab.drop_folder("no-vendor", ready=False)
    manifest = s3lab.get(columns + "stage_samples.tsv").decode().split("\n")
    header = manifest[0].split("\t")
    keep = [
        i for i, c in enumerate(header) if c not in ("SEQ_VENDOR", "SEQ_PLATFORM", "ILMN_R1_FQ", "ILMN_R2_FQ")
    ]
    rows = [[cells[i] for i in keep] for cells in (line.split("\t") for line in manifest if line)]
    rows[0] += ["R1_FQ"]
    rows[1] += ["s3://x-bucket/a_R1.fastq.gz"]
    s3lab.put(columns + "stage_samples.tsv", "\n".join("\t".join(r) for r in rows) + "\n")
    s3lab.put(columns + "daylily.ready", "2025-01-01T00:00:00Z")
    parent = s3lab.drop_folder("parent", ready=False)
    s3lab.put(
        parent + "stage_samples.tsv",
        s3lab.get(parent + "stage_samples.tsv").decode().replace("\tparent-S1\t", "\t../parent-S1\t"),
    )
    s3lab.put(parent + "daylily.ready", "2025-01-01T00:00:00Z")

    expected = {
        twice: "VAL-INPUT-009",
        infinite: "VAL-TYPE-002",
        columns: "VAL-TSV-001",
        parent: "VAL-ID-005",
    }

    async def all_errors() -> bool:
        return all(s3lab.exists(folder + sentinels.ERROR) for folder in expected)

    await wait_for(all_errors, 30, "daylily.error in every folder")
    messages = {folder: s3lab.get(folder + sentinels.ERROR).decode() for folder in expected}
    for folder, code in expected.items():
        assert code in messages[folder], (folder, messages[folder])
    assert "line 3: key 'dy-r' appears twice" in messages[twice]
    assert "SEQ_VENDOR (or SEQ_PLATFORM) is missing from the header" in messages[columns]
    async with pool.acquire() as conn:
        states = {r["name"]: r["state"] for r in await conn.fetch("SELECT name, state FROM worksets")}
    assert states == {"parent": "rejected"}  # the others never became worksets
