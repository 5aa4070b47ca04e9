"""A FASTQ cut past the sniffed start and one with Phred+64 qualities (real files: tests/worksets/fixtures/fastq)
are caught on every intake path through the real services: the HTTP validate endpoint answers with them, and
a workset submitted over HTTP, over NATS and as an S3 drop is rejected with them (daylily.error for the drop).
The sniff window is 1 KiB, so the cut lies well past it."""

from __future__ import annotations

import asyncio
import gzip
import json
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
from stamen.inputs import sentinels
from stamen.inputs.repository import IntakeRepository
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings
from tests.intake.test_sniff_files import BGZ, fixture
from tests.natskit import tenant_request

EXPECTED = {("SNF-GZ-003", "samples[0].r1"), ("SNF-FQ-009", "samples[0].r2")}


@pytest.fixture
async def portal(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestClient[Any, Any]]:
    await grant(pool, "acme", s3lab.bucket)  # the lab bucket is acme's (also its drop bucket)
    settings = make_settings(database_url, nats_url, s3lab.url)
    intake = make_intake(s3lab, sniff_bytes=1024)
    validator = TestServer(validator_app(settings, intake=intake))
    await validator.start_server()
    client = TestClient(
        TestServer(portal_app(settings, intake=intake, auth=AuthSettings(auth_enabled=False)))
    )
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await validator.close()


def broken_reads(s3lab: S3Lab) -> tuple[str, str]:
    return (
        s3lab.put("reads/cut_R1.fastq.gz", BGZ[: len(BGZ) // 2]),
        s3lab.put("reads/cut_R2.fastq.gz", gzip.compress(fixture("solexa_example.fastq"))),
    )


async def rejected_with(pool: asyncpg.Pool, name: str) -> set[tuple[str, str]]:
    deadline = time.monotonic() + 60
    while True:
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, state FROM worksets WHERE name = $1", name)
            if row is not None and row["state"] == "rejected":
                stored = await IntakeRepository(conn).validation_for(row["id"])
                assert stored is not None
                return {(f["code"], f["field"]) for f in stored["findings"]}
        assert time.monotonic() < deadline, f"{name} not rejected: {row}"
        await asyncio.sleep(0.1)


async def test_broken_fastqs_are_caught_on_every_path(
    portal: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool, nc: NATS
) -> None:
    r1, r2 = broken_reads(s3lab)

    def spec(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "pipeline": "fastq-qc",
            "export_uri": f"s3://{s3lab.bucket}/out/",
            "samples": [{"id": "S1", "platform": "ILMN", "r1": r1, "r2": r2}],
        }

    checked = await portal.post(
        "/api/v1/worksets/validate", json=spec("check"), headers={"X-Stamen-Tenant": "acme"}
    )
    report = await checked.json()
    assert not report["ok"] and {(f["code"], f["field"]) for f in report["findings"]} >= EXPECTED

    submitted = await portal.post(
        "/api/v1/worksets", json=spec("over-http"), headers={"X-Stamen-Tenant": "acme"}
    )
    assert submitted.status == 201
    reply = json.loads((await tenant_request(nc, "acme", json.dumps(spec("over-nats")).encode())).data)
    assert reply["ok"], reply
    folder = s3lab.drop_folder("over-s3", ready=False)
    s3lab.put(
        folder + "stage_samples.tsv",
        "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tLANE\tSEQ_VENDOR\tILMN_R1_FQ\t"
        f"ILMN_R2_FQ\nR1\tS1\tEX1\t1\tILMN\t{r1}\t{r2}\n",
    )
    s3lab.put(folder + "daylily.ready", "2025-01-01T00:00:00Z")

    for name in ("over-http", "over-nats"):
        assert await rejected_with(pool, name) >= EXPECTED, name
    assert {code for code, _ in await rejected_with(pool, "over-s3")} >= {code for code, _ in EXPECTED}
    deadline = time.monotonic() + 30
    while not s3lab.exists(folder + sentinels.ERROR):  # written by validator-sentinels after the rejection
        assert time.monotonic() < deadline, "no daylily.error"
        await asyncio.sleep(0.1)
    error = s3lab.get(folder + sentinels.ERROR).decode()
    assert "SNF-GZ-003" in error and "inside the BGZF block" in error
