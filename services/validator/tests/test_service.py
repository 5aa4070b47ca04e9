"""The whole validator service (init_app) on real NATS, PostgreSQL and moto: NATS request/reply intake,
the S3 drop watcher, and a consumer that survives every broken input."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
import yaml
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError

from services.validator.app import init_app
from stamen.customers import NewCustomer
from stamen.customers.repository import CustomerRepository
from stamen.inputs import sentinels
from stamen.intake import submit_workset
from stamen.stack.servers import NatsServer
from stamen.worksets.limits import MAX_DOCUMENT_BYTES
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings
from tests.natskit import tenant_request
from tests.worksets.conftest import fastq_records, gz


@pytest.fixture
async def validator(
    database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> AsyncIterator[TestServer]:
    await grant(pool, "acme", s3lab.bucket)  # the lab bucket is acme's (it is also acme's drop bucket)
    app = init_app(make_settings(database_url, nats_url, s3lab.url), intake=make_intake(s3lab))
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def states(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return {r["name"]: r["state"] for r in await conn.fetch("SELECT name, state FROM worksets")}


async def request(
    nc: NATS, tenant: str, body: bytes, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    reply = await tenant_request(nc, tenant, body, headers=headers)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_nats_request_twice_makes_one_workset(
    validator: TestServer, nc: NATS, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    body = json.dumps(s3lab.spec("lab-run")).encode()
    headers = {"Idempotency-Key": "lims-4711", "Content-Type": "application/json"}
    first = await request(nc, "acme", body, headers)
    second = await request(nc, "acme", body, headers)
    assert first["ok"] and first["created"] and not second["created"]
    assert first["workset_id"] == second["workset_id"]
    await wait_for(lambda: _state_is(pool, "lab-run", "queued"), 10, "validation")
    assert len(await states(pool)) == 1
    refused = await request(
        nc, "acme", yaml.safe_dump({"name": "x", "samples": [], "pipeline": "teleport"}).encode()
    )
    assert not refused["ok"] and refused["code"] == "VALIDATION_FAILED"
    assert {f["code"] for f in refused["details"]["findings"]} >= {"VAL-ENUM-001"}
    bad_tenant = await request(nc, "ACME", body)
    assert bad_tenant == {
        "ok": False,
        "code": "TENANT_INVALID",
        "message": bad_tenant["message"],
        "details": {},
    }


async def _state_is(pool: asyncpg.Pool, name: str, state: str) -> bool:
    return (await states(pool)).get(name) == state


async def test_two_validators_share_the_intake_subject(
    validator: TestServer, database_url: str, nats_url: str, s3lab: S3Lab, nc: NATS, pool: asyncpg.Pool
) -> None:
    second = TestServer(init_app(make_settings(database_url, nats_url, s3lab.url), intake=make_intake()))
    await second.start_server()
    try:
        for i in range(6):
            answer = await request(nc, "acme", json.dumps(s3lab.spec(f"shared-{i}")).encode())
            assert answer["ok"], answer
    finally:
        await second.close()
    # A queue group: each request handled by exactly one of the two validators.
    assert sorted(await states(pool)) == [f"shared-{i}" for i in range(6)]


async def test_the_consumer_survives_the_broken_input_corpus(
    validator: TestServer, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    def with_r2(body: bytes | None) -> dict[str, Any]:
        spec = s3lab.spec()
        key = spec["samples"][0]["r2"].split("/", 3)[3]
        s3lab.client.delete_object(Bucket=s3lab.bucket, Key=key)
        new_key = key.replace("reads/", f"reads/{len(corpus)}/")
        if body is not None:
            spec["samples"][0]["r2"] = s3lab.put(new_key, body)
        else:
            spec["samples"][0]["r2"] = f"s3://{s3lab.bucket}/{new_key}"
        return spec

    corpus: dict[str, tuple[dict[str, Any], str]] = {}
    corpus["truncated"] = (with_r2(gz(fastq_records(50, mate=2))[:-40]), "SNF-GZ-003")
    corpus["short-quality"] = (
        with_r2(gz(b"@A00123:8:H5KCNDSXY:1:1101:1000:2000 2:N:0:ATCACG\nACGT\n+\nII\n")),
        "SNF-FQ-003",
    )
    corpus["absent"] = (with_r2(None), "SNF-OBJ-001")
    corpus["empty"] = (with_r2(b""), "SNF-OBJ-002")
    corpus["garbage"] = (with_r2(b"\x00\xff" * 40_000), "SNF-GZ-001")
    corpus["unknown-ref"] = (s3lab.spec(reference_genome="hg99"), "VAL-REF-001")
    corpus["not-a-spec"] = ({"samples": "a string", "pipeline": 7}, "VAL-REQ-001")
    for name, (spec, _) in corpus.items():
        await submit_workset(
            pool, tenant_id="acme", name=name, spec=spec, region="us-west-2", source="test", actor="test"
        )
    await wait_for(lambda: _all_done(pool, set(corpus)), 20, "the corpus to be rejected")
    assert set((await states(pool)).values()) == {"rejected"}
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT w.name, v.findings FROM worksets w JOIN workset_validations v ON v.workset_id = w.id"
        )
    found = {r["name"]: {f["code"] for f in json.loads(r["findings"])} for r in rows}
    for name, (_, code) in corpus.items():
        assert code in found[name], (name, found[name])
    # Still consuming.
    await submit_workset(
        pool,
        tenant_id="acme",
        name="after",
        spec=s3lab.spec("after"),
        region="us-west-2",
        source="test",
        actor="test",
    )
    await wait_for(lambda: _state_is(pool, "after", "queued"), 10, "a good workset after the corpus")


async def _all_done(pool: asyncpg.Pool, names: set[str]) -> bool:
    current = await states(pool)
    return names <= set(current) and all(current[n] not in ("submitted", "validating") for n in names)


async def test_an_s3_drop_goes_ready_in_progress_then_error_when_rejected(
    validator: TestServer, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    folder = s3lab.drop_folder("drop-ok")
    bad = s3lab.drop_folder("drop-bad", info={"pipeline_type": "fastq-qc", "reference_genome": "hg99"})
    elapsed = await wait_for(lambda: _names(pool, {"drop-ok", "drop-bad"}), 5, "the watcher")
    assert elapsed < 5
    for picked in (folder, bad):  # daylily.ready -> daylily.in_progress, written right after the submission
        await wait_for(
            functools.partial(_exists, s3lab, picked + sentinels.IN_PROGRESS), 2, "daylily.in_progress"
        )
    await wait_for(lambda: _state_is(pool, "drop-bad", "rejected"), 10, "rejection")
    await wait_for(lambda: _exists(s3lab, bad + sentinels.ERROR), 10, "daylily.error")
    stamp, message = s3lab.get(bad + sentinels.ERROR).decode().split("\t")
    assert datetime.fromisoformat(stamp).tzinfo is not None
    assert message.startswith("rejected: VAL-REF-001 reference_genome")
    await wait_for(lambda: _state_is(pool, "drop-ok", "queued"), 10, "validation")
    assert not s3lab.exists(folder + sentinels.ERROR)


async def _names(pool: asyncpg.Pool, names: set[str]) -> bool:
    return names <= set(await states(pool))


async def _exists(s3lab: S3Lab, key: str) -> bool:
    return s3lab.exists(key)


async def _customer(pool: asyncpg.Pool, customer_id: str, *, bucket: str, max_storage_gb: float) -> None:
    new = NewCustomer.create(
        customer_name=f"{customer_id} labs",
        email=f"ops@{customer_id}.example.org",
        customer_id=customer_id,
        max_concurrent_worksets=5,
        max_storage_gb=max_storage_gb,
    )
    async with pool.acquire() as conn:
        assert await CustomerRepository(conn).insert_onboarding(new, s3_bucket=bucket, region="us-west-2")


async def _findings_of(pool: asyncpg.Pool, name: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        raw = await conn.fetchval(
            "SELECT v.findings FROM worksets w JOIN workset_validations v "
            "ON v.workset_id = w.id WHERE w.name = $1",
            name,
        )
    found: list[dict[str, Any]] = json.loads(raw)
    return found


async def test_storage_quota_is_checked_for_every_intake_path(
    validator: TestServer, nc: NATS, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    """acme (the drop bucket's tenant) is over a 0 GB quota; roomy has room; ghost is no customer at all."""
    full, spacious = s3lab.new_bucket(), s3lab.new_bucket()
    s3lab.put("results/old.bam", b"x" * 1500, bucket=full)
    s3lab.put("results/old.bam", b"x" * 1500, bucket=spacious)
    await _customer(pool, "acme", bucket=full, max_storage_gb=0)
    await _customer(pool, "roomy", bucket=spacious, max_storage_gb=100)
    for tenant in ("roomy", "ghost"):  # their inputs are in the lab's bucket
        await grant(pool, tenant, s3lab.bucket)
    # NATS: the document is fine, so the request is accepted; the validator then rejects the workset.
    answer = await request(nc, "acme", json.dumps(s3lab.spec("quota-nats")).encode())
    assert answer["ok"], answer
    # `stamen submit` (submit_workset) and an S3 drop of acme's bucket mapping: the same verdict.
    await submit_workset(
        pool,
        tenant_id="acme",
        name="quota-cli",
        spec=s3lab.spec("quota-cli"),
        region="us-west-2",
        source="cli",
        actor="test",
    )
    dropped = s3lab.drop_folder("quota-drop")
    for tenant, name in (("roomy", "roomy-cli"), ("ghost", "ghost-cli")):
        await submit_workset(
            pool,
            tenant_id=tenant,
            name=name,
            spec=s3lab.spec(name),
            region="us-west-2",
            source="cli",
            actor="test",
        )
    names = {"quota-nats", "quota-cli", "quota-drop", "roomy-cli", "ghost-cli"}
    await wait_for(lambda: _all_done(pool, names), 20, "the validator's verdicts")
    current = await states(pool)
    assert {n: current[n] for n in names} == {
        "quota-nats": "rejected",
        "quota-cli": "rejected",
        "quota-drop": "rejected",
        "roomy-cli": "queued",
        "ghost-cli": "queued",
    }
    for name in ("quota-nats", "quota-cli", "quota-drop"):
        [over] = [f for f in await _findings_of(pool, name) if f["severity"] == "error"]
        assert (over["code"], over["field"]) == ("QUOTA-STORAGE-001", "tenant")
        assert f"s3://{full} holds 0.000 GB (1500 bytes)" in over["message"]
        assert "quota of 0 GB" in over["message"] and "max_storage_gb" in over["fix"]
    await wait_for(
        lambda: _exists(s3lab, dropped + sentinels.ERROR), 10, "daylily.error of the dropped folder"
    )
    assert "QUOTA-STORAGE-001 tenant" in s3lab.get(dropped + sentinels.ERROR).decode()


# request -> (body, Content-Type, the one finding code of the reply)
BROKEN_REQUESTS: dict[str, tuple[bytes, str | None, str]] = {
    "garbage bytes": (bytes(range(256)) * 16, None, "VAL-INPUT-001"),
    "YAML list": (b"- name: lab-run\n- samples: []\n", "application/yaml", "VAL-INPUT-004"),
    "YAML scalar": (b"just a sentence\n", None, "VAL-INPUT-004"),
    "JSON array": (b"[1, 2, 3]", "application/json", "VAL-INPUT-004"),
    "invalid JSON": (b'{"name": ', "application/json", "VAL-INPUT-003"),
    "empty body": (b"", None, "VAL-INPUT-005"),
}


async def test_broken_requests_get_precise_replies_and_the_responder_keeps_answering(
    validator: TestServer, nc: NATS, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    for case, (body, content_type, code) in BROKEN_REQUESTS.items():
        headers = {"Content-Type": content_type} if content_type else None
        answer = await request(nc, "acme", body, headers)
        assert (answer["ok"], answer["code"]) == (False, "VALIDATION_FAILED"), (case, answer)
        assert answer["message"] == "the workset has 1 error(s); nothing was submitted"
        [found] = answer["details"]["findings"]
        assert (found["code"], found["severity"]) == (code, "error"), case
        assert found["message"] and found["fix"]
    # stamen's nats-server refuses a 10 MB message (max_payload 8 MiB) before the validator sees it.
    with pytest.raises(MaxPayloadError):
        await nc.request("stamen.intake.acme", b"\x00" * 10 * 1024 * 1024, timeout=10)
    assert await states(pool) == {}
    answer = await request(nc, "acme", json.dumps(s3lab.spec("after-garbage")).encode())
    assert answer["ok"] and answer["created"], answer


@pytest.fixture
async def roomy_nats_url(tmp_path: Path) -> AsyncIterator[str]:
    """A nats-server that lets 10 MB messages through (max_payload 16 MB), as an operator may configure it."""
    data_dir = tmp_path / "roomy-nats"
    data_dir.mkdir()
    # NatsServer's only hook for extra configuration is the file it includes (meant for authorization).
    (data_dir / "limits.conf").write_text("max_payload: 16777216\n")
    server = NatsServer(data_dir, auth_file=data_dir / "limits.conf").start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_a_10_mb_request_is_refused_with_its_code(
    roomy_nats_url: str, database_url: str, s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    await grant(pool, "acme", s3lab.bucket)
    server = TestServer(
        init_app(make_settings(database_url, roomy_nats_url, s3lab.url), intake=make_intake())
    )
    await server.start_server()
    client = await nats.connect(roomy_nats_url)
    try:
        garbage = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        answer = await request(client, "acme", garbage)
        [found] = answer["details"]["findings"]
        assert (answer["code"], found["code"]) == ("VALIDATION_FAILED", "VAL-INPUT-002")
        assert found["message"] == f"input is 10485760 bytes; the limit is {MAX_DOCUMENT_BYTES} bytes"
        answer = await request(client, "acme", json.dumps(s3lab.spec("after-10mb")).encode())
        assert answer["ok"], answer
    finally:
        await client.close()
        await server.close()
    assert list(await states(pool)) == ["after-10mb"]
