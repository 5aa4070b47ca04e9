"""The isolation matrix on the S3 paths: tenant A's spec naming tenant B's bucket is refused on every intake
path (API create and validate, NATS, S3 drop, requeue) and by the scheduler before dispatch, with the same
answer whether B's object exists or not; a bucket an operator grants A works, read-only where it says so."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS

from services.scheduler.tests.support import (
    add_cluster,
    enqueue,
    in_process_scheduler,
    run_until,
    state_of,
    write_pipelines,
)
from services.validator.app import init_app as validator_app
from stamen.domain.lifecycle import WorksetState
from stamen.inputs.drops import DropIntake
from stamen.inputs.objects import open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository
from tests.api.conftest import World
from tests.intake.s3kit import DROP_PREFIX, grant, make_settings
from tests.natskit import tenant_request
from tests.worksets.conftest import fastq_records, gz

REPO = Path(__file__).resolve().parents[2]


class Buckets:
    def __init__(self, world: World, endpoint: str, a: str, b: str) -> None:
        self.world, self.a, self.b = world, a, b
        self.s3: Any = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2")

    def reads(self, bucket: str, prefix: str) -> tuple[str, str]:
        uris = []
        for mate in (1, 2):
            key = f"{prefix}/S1_R{mate}.fastq.gz"
            self.s3.put_object(Bucket=bucket, Key=key, Body=gz(fastq_records(40, mate=mate)))
            uris.append(f"s3://{bucket}/{key}")
        return uris[0], uris[1]

    def delete(self, *uris: str) -> None:
        for uri in uris:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            self.s3.delete_object(Bucket=bucket, Key=key)


def spec(name: str, r1: str, r2: str, export: str) -> dict[str, Any]:
    return {
        "name": name,
        "pipeline": "fastq-qc",
        "reference_genome": "GRCh38",
        "samples": [{"id": "S1", "platform": "ILLUMINA", "r1": r1, "r2": r2}],
        "export_uri": export,
    }


@pytest.fixture
async def buckets(world: World, moto_endpoint: str) -> Buckets:
    async with world.pool.acquire() as conn:
        rows = {r["customer_id"]: r["s3_bucket"] for r in await conn.fetch("SELECT * FROM customers")}
    return Buckets(world, moto_endpoint, rows[world.a.id], rows[world.b.id])


@pytest.fixture
async def validator(
    world: World, database_url: str, nats_url: str, moto_endpoint: str
) -> AsyncIterator[TestServer]:
    """The real validator service beside the portal: NATS intake and the submitted-workset consumer."""
    intake = IntakeSettings(seed_demo_data="false")
    server = TestServer(validator_app(make_settings(database_url, nats_url, moto_endpoint), intake=intake))
    await server.start_server()
    yield server
    await server.close()


def access(findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["code"], f["field"]) for f in findings if f["code"].startswith("S3-ACCESS")]


async def answers(
    world: World, nc: NATS, drops: DropIntake, b: Buckets, foreign: dict[str, Any], round_: str
) -> dict[str, Any]:
    """What A is told on every intake path for a spec naming B's objects."""
    key = world.key(world.a)
    create = await world.client.post("/api/v1/worksets", json=foreign, headers=key)
    validate = await world.client.post("/api/v1/worksets/validate?dry_run=false", json=foreign, headers=key)
    reply = await tenant_request(nc, world.a.id, json.dumps(foreign).encode(), timeout=15)
    # An S3 drop in A's own bucket (mapped to A) whose manifest reads B's objects.
    folder = f"{DROP_PREFIX}foreign-{round_}/"
    sample = foreign["samples"][0]
    manifest = (
        "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tLANE\tSEQ_VENDOR\tSEQ_PLATFORM\tILMN_R1_FQ\tILMN_R2_FQ\n"
        f"R1\tS1\tEX1\t1\tILMN\tNOVASEQX\t{sample['r1']}\t{sample['r2']}\n"
    )
    work = yaml.safe_dump({"dy-r": "-p help", "export_uri": foreign["export_uri"]})
    info = yaml.safe_dump({"pipeline_type": "fastq-qc", "reference_genome": "GRCh38"})
    for name, body in (
        ("daylily_work.yaml", work),
        ("stage_samples.tsv", manifest),
        ("daylily_info.yaml", info),
        ("daylily.ready", "2025-01-01T00:00:00Z"),
    ):
        b.s3.put_object(Bucket=b.a, Key=folder + name, Body=body.encode())
    dropped = await drops.consider(b.a, folder)
    return {
        "create": (create.status, await create.json()),
        "validate": (validate.status, await validate.json()),
        "nats": json.loads(reply.data),
        "drop": (dropped.action, dropped.findings),
    }


async def test_a_spec_naming_b_s_bucket_is_refused_on_every_intake_path_whatever_b_holds(
    world: World, buckets: Buckets, validator: TestServer, nc: NATS, moto_endpoint: str
) -> None:
    await refused_on_every_intake_path(world, buckets, nc, moto_endpoint)
    # One world for both halves (each world costs seconds of onboarding).
    await a_granted_shared_bucket_works_read_only_where_granted_so(world, buckets, nc)
    await the_documented_bucket_grant_recipe_works_as_written(world, buckets)


async def refused_on_every_intake_path(world: World, buckets: Buckets, nc: NATS, moto_endpoint: str) -> None:
    b = buckets
    r1, r2 = b.reads(b.b, "private")  # B's own reads, which A must learn nothing about
    foreign = spec("foreign", r1, r2, f"s3://{b.a}/results/foreign/")
    intake = IntakeSettings(drop_buckets=f"{b.a}={world.a.id},{b.b}", seed_demo_data="false")
    settings = Settings(AWS_ENDPOINT_URL=moto_endpoint, AWS_REGION="us-west-2")
    async with open_object_store(settings, intake) as store:
        drops = DropIntake(world.pool, store, region="us-west-2", intake=intake)
        present = await answers(world, nc, drops, b, foreign, "present")
        b.delete(r1, r2)
        absent = await answers(world, nc, drops, b, foreign, "absent")
        # B's bucket is watched but not mapped: a folder there claiming to be A's is refused too.
        claim = f"{DROP_PREFIX}claims-a/"
        for name, body in (
            ("daylily_work.yaml", yaml.safe_dump({"export_uri": f"s3://{b.a}/r/"})),
            (
                "stage_samples.tsv",
                "SAMPLE_ID\tSEQ_VENDOR\tILMN_R1_FQ\tILMN_R2_FQ\n"
                f"S1\tILMN\ts3://{b.a}/x_R1.fastq.gz\ts3://{b.a}/x_R2.fastq.gz\n",
            ),
            ("daylily_info.yaml", yaml.safe_dump({"customer_id": world.a.id})),
            ("daylily.ready", "now"),
        ):
            b.s3.put_object(Bucket=b.b, Key=claim + name, Body=body.encode())
        claimed = await drops.consider(b.b, claim)

    assert present == absent  # not one byte of difference: existence and size of B's objects stay B's
    refused = [("S3-ACCESS-001", "samples[0].r1"), ("S3-ACCESS-001", "samples[0].r2")]
    status, body = present["create"]
    assert (status, body["code"], access(body["details"]["findings"])) == (422, "VALIDATION_FAILED", refused)
    status, report = present["validate"]
    assert status == 200 and not report["ok"] and access(report["findings"]) == refused
    assert not [f for f in report["findings"] if f["code"].startswith("SNF-")], report["findings"]
    assert b.b in report["findings"][0]["message"] and "stamen bucket grant" in report["findings"][0]["fix"]
    assert (present["nats"]["code"], access(present["nats"]["details"]["findings"])) == (
        "VALIDATION_FAILED",
        refused,
    )
    action, findings = present["drop"]
    assert action == "refused" and access(findings) == refused
    assert (claimed.action, access(claimed.findings)) == ("refused", [("S3-ACCESS-003", "")])
    assert (
        b.s3.get_object(Bucket=b.b, Key=claim + "daylily.error")["Body"].read().count(b"S3-ACCESS-003") == 1
    )
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM worksets WHERE name LIKE 'foreign%'") == 0

    # Writing into B's bucket is refused the same way (the report would have landed there).
    a1, a2 = b.reads(b.a, "mine")
    into_b = await world.client.post(
        "/api/v1/worksets", json=spec("into-b", a1, a2, f"s3://{b.b}/loot/"), headers=world.key(world.a)
    )
    assert access((await into_b.json())["details"]["findings"]) == [("S3-ACCESS-002", "export_uri")]


async def a_granted_shared_bucket_works_read_only_where_granted_so(
    world: World, buckets: Buckets, nc: NATS
) -> None:
    b, shared = buckets, f"shared-refs-{uuid.uuid4().hex[:8]}"
    b.s3.create_bucket(Bucket=shared, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    r1, r2 = b.reads(shared, "refs")
    granted = await world.client.post(
        "/api/v1/bucket-grants", headers=world.operator,
        json={"tenant": world.a.id, "bucket": shared, "access": "read-only", "note": "shared references"},
    )  # fmt: skip
    assert granted.status == 201, await granted.text()
    listed = await (await world.client.get("/api/v1/buckets", headers=world.key(world.a))).json()
    assert [(i["bucket"], i["access"], i["source"]) for i in listed["items"]] == [
        (b.a, "read-write", "own"),
        (shared, "read-only", "grant"),
    ]
    other = await (await world.client.get("/api/v1/buckets", headers=world.key(world.b))).json()
    assert [i["bucket"] for i in other["items"]] == [b.b]  # A's grant is not B's business

    ok = spec("shared-ok", r1, r2, f"s3://{b.a}/results/shared-ok/")
    report = await (
        await world.client.post(
            "/api/v1/worksets/validate?dry_run=false", json=ok, headers=world.key(world.a)
        )
    ).json()
    assert report["ok"] and report["findings"] == [] and report["estimate"]["unsized_inputs"] == []
    created = await world.client.post("/api/v1/worksets", json=ok, headers=world.key(world.a))
    assert created.status == 201, await created.text()
    reply = json.loads(
        (
            await tenant_request(
                nc, world.a.id, json.dumps({**ok, "name": "shared-nats"}).encode(), timeout=15
            )
        ).data
    )
    assert reply["ok"], reply
    # Read-only: its report may not be written there; and B, not granted, may not even read it.
    write = await world.client.post(
        "/api/v1/worksets", json=spec("shared-w", r1, r2, f"s3://{shared}/out/"), headers=world.key(world.a)
    )
    findings = (await write.json())["details"]["findings"]
    assert access(findings) == [("S3-ACCESS-002", "export_uri")] and "read-only" in findings[0]["message"]
    as_b = await world.client.post(
        "/api/v1/worksets", json=spec("b-shared", r1, r2, f"s3://{b.b}/r/"), headers=world.key(world.b)
    )
    assert access((await as_b.json())["details"]["findings"]) == [
        ("S3-ACCESS-001", "samples[0].r1"),
        ("S3-ACCESS-001", "samples[0].r2"),
    ]
    # Revoked: the requeue of A's workset is refused now (a customer cannot grant; only operators).
    assert (
        await world.client.post(
            "/api/v1/bucket-grants",
            headers=world.key(world.a),
            json={"tenant": world.a.id, "bucket": b.b, "access": "read-write"},
        )
    ).status == 403
    revoked = await world.client.delete(
        f"/api/v1/bucket-grants/{world.a.id}/{shared}", headers=world.operator
    )
    assert revoked.status == 200
    ws_id = (await created.json())["workset_id"]
    deadline = time.monotonic() + 20
    while await state_of(world.pool, ws_id) != "queued":  # the validator's verdict on it
        assert time.monotonic() < deadline, await state_of(world.pool, ws_id)
        await asyncio.sleep(0.1)
    async with UnitOfWork(world.pool) as uow:
        ws = await uow.worksets.get(ws_id, for_update=True)  # it ran and failed
        for state in (WorksetState.SCHEDULED, WorksetState.FAILED):
            ws.transition(state, actor="test", reason="test fixture")
        await uow.worksets.save(ws)
        await uow.commit()
    retry = await world.client.post(
        f"/api/v1/worksets/{ws_id}/retry", json={"changes": {"max_retries": 2}}, headers=world.key(world.a)
    )
    body = await retry.json()
    assert (retry.status, body["code"]) == (422, "S3_ACCESS_DENIED")
    assert access(body["details"]["findings"]) == [
        ("S3-ACCESS-001", "samples[0].r1"),
        ("S3-ACCESS-001", "samples[0].r2"),
    ]


async def test_the_scheduler_refuses_to_dispatch_a_spec_naming_a_foreign_bucket(
    pool: Any, tmp_path: Path
) -> None:
    """Defence in depth: a workset whose row names a bucket its tenant may not use (changed after validation,
    or a grant revoked since) fails before any step is recorded or started, and is not retried."""
    marker = tmp_path / "ran"
    settings = Settings(
        pipelines_file=write_pipelines(tmp_path / "p.yaml", [
            {"name": "touch", "argv": ["{python}", "-c", f"open({str(marker)!r}, 'w').write('x')"]}]),
        work_dir=tmp_path / "work",
    )  # fmt: skip
    await add_cluster(pool, workdir=tmp_path / "work")
    changed = await enqueue(pool, "acme", samples=[{"id": "S1", "r1": "s3://tenant-b-data/S1_R1.fq.gz"}])
    await grant(pool, "acme", "lab-revoked", "read-only")
    revoked = await enqueue(pool, "acme", samples=[{"id": "S1", "r1": "s3://lab-revoked/S1_R1.fq.gz"}])
    async with pool.acquire() as conn:
        await BucketGrantRepository(conn).revoke("acme", "lab-revoked")
    loop = in_process_scheduler(pool, settings)
    for ws_id, bucket in ((changed, "tenant-b-data"), (revoked, "lab-revoked")):
        assert await run_until(loop, pool, ws_id, {"failed", "completed", "dead_lettered"}) == "failed"
        async with UnitOfWork(pool) as uow:
            history = await uow.worksets.history(ws_id)
            assert await uow.step_runs.step_run_counts(ws_id) == {}
        assert "S3-ACCESS-001" in history[-1].reason and bucket in history[-1].reason
        async with pool.acquire() as conn:
            bodies = [
                json.loads(bytes(r["body"]))
                for r in await conn.fetch("SELECT body FROM outbox WHERE subject LIKE '%.workset.failed'")
            ]
        [failed] = [e for e in bodies if e["workset_id"] == ws_id]
        assert failed["payload"]["native_state"] == "S3_ACCESS"
    assert not marker.exists()


def recipe_calls(names: dict[str, str]) -> tuple[list[list[str]], dict[str, Any]]:
    """The curl commands of docs/api.md's bucket-grant recipe as shlex tokens (in order), with the doc's names
    replaced by the test world's, and the refused finding the doc shows after it."""
    text = (REPO / "docs" / "api.md").read_text()
    block = re.search(
        r"<!-- bucket-grant recipe[^>]*-->\n```bash\n(.*?)```\n<!-- end of bucket-grant recipe -->"
        r".*?```json\n(.*?)```",
        text,
        re.S,
    )
    assert block, "docs/api.md lost its bucket-grant recipe block"
    block_text, example_text = block.group(1), block.group(2)
    for doc_name, ours in names.items():  # in the order given
        block_text, example_text = block_text.replace(doc_name, ours), example_text.replace(doc_name, ours)
    commands, pending = [], ""
    for line in block_text.splitlines():
        if not pending and (not line.strip() or line.startswith("#")):
            continue
        pending += line.removesuffix("\\") + "\n"
        if line.endswith("\\"):
            continue
        try:
            tokens = shlex.split(pending)
        except ValueError:  # an open quote: the -d body goes on
            continue
        pending = ""
        if tokens[0] == "curl":
            commands.append(tokens)
    return commands, json.loads(example_text)


def curl_request(tokens: list[str], variables: dict[str, str]) -> tuple[str, str, dict[str, str], Any]:
    """(method, path, headers, JSON body) of one `curl -sS [-X M] URL [-H h]... [-d body]` from the docs."""

    def expand(arg: str) -> str:
        for name, value in variables.items():
            arg = arg.replace(f"${name}", value)
        return arg

    method, url, headers, data = "GET", "", {}, None
    args = iter(map(expand, tokens[1:]))
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(": ")
            headers[name] = value
        elif arg == "-d":
            data = json.loads(next(args))
        elif arg != "-sS":
            assert not url, f"an option this test does not know: {arg}"
            url = arg
    assert url.startswith("/api/v1/"), tokens
    return method, url, headers, data


async def the_documented_bucket_grant_recipe_works_as_written(world: World, buckets: Buckets) -> None:
    shared = f"shared-doc-{uuid.uuid4().hex[:8]}"
    # Longest first: the doc's own bucket name contains its tenant's.
    calls, refused_example = recipe_calls(
        {"stamen-acme-us-west-2": buckets.a, "shared-references": shared, "acme": world.a.id}
    )
    variables = {"STAMEN_URL": "", "OPERATOR_TOKEN": world.operator_token, "LAB_KEY": world.a.api_key}
    answers = []
    for tokens in calls:
        method, path, headers, data = curl_request(tokens, variables)
        response = await world.client.request(method, path, headers=headers, json=data)
        answers.append((response.status, await response.json()))
    assert [status for status, _ in answers] == [201, 200, 200, 200, 200, 200], answers
    granted, listed, ok, write, revoked, refused = (body for _, body in answers)
    assert (granted["tenant"], granted["bucket"], granted["access"]) == (world.a.id, shared, "read-only")
    assert [(i["bucket"], i["access"], i["source"]) for i in listed["items"]] == [
        (buckets.a, "read-write", "own"),
        (shared, "read-only", "grant"),
    ]
    assert ok["ok"] and ok["findings"] == [], ok
    assert not write["ok"] and access(write["findings"]) == [("S3-ACCESS-002", "export_uri")]
    assert revoked["bucket"] == shared
    assert access(refused["findings"]) == [
        ("S3-ACCESS-001", "samples[0].r1"),
        ("S3-ACCESS-001", "samples[0].r2"),
    ]
    assert refused["findings"][0] == refused_example  # the doc shows the very answer
