"""The portal's JSON API on the real app factory, PostgreSQL, NATS and moto (aiohttp's test client).

These tests are about intake, so they run in local-demo mode (STAMEN_AUTH_ENABLED=false: every request is an
operator, who names the tenant in X-Stamen-Tenant). Authentication and isolation are tested in tests/api."""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient

from services.portal.tests.conftest import ACME, count
from stamen.inputs import sentinels
from tests.intake.s3kit import DROP_PREFIX, S3Lab
from tests.worksets.conftest import fastq_records, gz


async def test_submit_with_idempotency_key_twice_makes_one_workset(
    client: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    spec = s3lab.spec()
    headers = {**ACME, "Idempotency-Key": "batch-7"}
    first = await client.post("/api/v1/worksets", json=spec, headers=headers)
    assert first.status == 201, await first.text()
    body = await first.json()
    assert body["ok"] and body["state"] == "submitted" and first.headers["Location"] == body["links"]["self"]
    second = await client.post(
        "/api/v1/worksets", data=yaml.safe_dump(spec), headers={**headers, "Content-Type": "application/yaml"}
    )
    assert second.status == 200 and (await second.json())["workset_id"] == body["workset_id"]
    assert await count(pool) == 1
    shown = await client.get(body["links"]["self"])
    detail = await shown.json()
    assert detail["state"] == "submitted" and detail["tenant"] == "acme"
    assert [h["to_state"] for h in detail["history"]] == ["submitted"] and detail["history"][0][
        "actor"
    ] == "operator:local-demo"
    hidden = await client.get(body["links"]["self"], headers={"X-Stamen-Tenant": "other"})
    assert hidden.status == 404 and (await hidden.json())["code"] == "WORKSET_NOT_FOUND"


@pytest.mark.parametrize(
    ("headers", "data", "status", "code"),
    [
        ({"Content-Type": "application/json"}, b"{}", 400, "TENANT_REQUIRED"),
        ({**ACME, "Content-Type": "text/plain"}, b"name: x", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            {"X-Stamen-Tenant": "Bad Tenant!", "Content-Type": "application/json"},
            b"{}",
            400,
            "TENANT_INVALID",
        ),
        (
            {**ACME, "Content-Type": "application/json", "Idempotency-Key": "has space"},
            b"{}",
            400,
            "IDEMPOTENCY_KEY_INVALID",
        ),
        ({**ACME, "Content-Type": "application/json"}, b"{not json", 422, "VALIDATION_FAILED"),
    ],
)
async def test_request_errors_have_stable_codes(
    client: TestClient[Any, Any], headers: dict[str, str], data: bytes, status: int, code: str
) -> None:
    response = await client.post("/api/v1/worksets", data=data, headers=headers)
    assert response.status == status
    body = await response.json()
    assert body["code"] == code and body["message"] and isinstance(body["details"], dict)


async def validate(
    client: TestClient[Any, Any], spec: Any, *, dry_run: bool = False
) -> tuple[int, dict[str, Any]]:
    data, media = (
        (spec, "application/yaml")
        if isinstance(spec, bytes)
        else (json.dumps(spec).encode(), "application/json")
    )
    response = await client.post(
        f"/api/v1/worksets/validate?dry_run={str(dry_run).lower()}",
        data=data,
        headers={**ACME, "Content-Type": media},
    )
    return response.status, await response.json()


def replace_r2(s3lab: S3Lab, spec: dict[str, Any], body: bytes | None) -> dict[str, Any]:
    key = spec["samples"][0]["r2"].split("/", 3)[3]
    s3lab.client.delete_object(Bucket=s3lab.bucket, Key=key)
    if body is not None:
        s3lab.put(key, body)
    return spec


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("truncated gzip", "SNF-GZ-003"),
        ("quality shorter than sequence", "SNF-FQ-003"),
        ("missing R2", "VAL-PAIR-002"),
        ("unknown reference", "VAL-REF-001"),
        ("absent object", "SNF-OBJ-001"),
        ("empty object", "SNF-OBJ-002"),
        ("YAML not a mapping", "VAL-INPUT-004"),
    ],
)
async def test_broken_input_corpus_each_gives_its_own_code(
    client: TestClient[Any, Any], s3lab: S3Lab, case: str, code: str
) -> None:
    spec = s3lab.spec()
    document: Any = spec
    if case == "truncated gzip":
        replace_r2(s3lab, spec, gz(fastq_records(50, mate=2))[:-40])
    elif case == "quality shorter than sequence":
        replace_r2(s3lab, spec, gz(b"@A00123:8:H5KCNDSXY:1:1101:1000:2000 2:N:0:ATCACG\nACGT\n+\nII\n"))
    elif case == "missing R2":
        del spec["samples"][0]["r2"]
    elif case == "unknown reference":
        spec["reference_genome"] = "hg99"
    elif case == "absent object":
        replace_r2(s3lab, spec, None)
    elif case == "empty object":
        replace_r2(s3lab, spec, b"")
    elif case == "YAML not a mapping":
        document = b"- name: x\n- samples: []\n"
    status, report = await validate(client, document)
    assert status == 200
    assert {f["code"] for f in report["findings"]} == {code}, report["findings"]
    assert report["dry_run"] is False
    if code != "VAL-PAIR-002":  # a warning: the workset could still run
        assert report["ok"] is False


async def test_ten_megabytes_of_garbage_is_refused_by_size(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    garbage = os.urandom(10 * 1024 * 1024)
    for path in ("/api/v1/worksets", "/api/v1/worksets/validate", "/api/v1/s3-events"):
        response = await client.post(path, data=garbage, headers={**ACME, "Content-Type": "application/json"})
        assert response.status == 413, path
        assert (await response.json())["code"] == "REQUEST_TOO_LARGE"
    # Below the body limit, garbage is a document finding, not a 500.
    response = await client.post(
        "/api/v1/worksets", data=os.urandom(64 * 1024), headers={**ACME, "Content-Type": "application/yaml"}
    )
    assert response.status == 422
    assert [f["code"] for f in (await response.json())["details"]["findings"]] == ["VAL-INPUT-001"]
    assert await count(pool) == 0


async def test_validate_dry_run_schema_generate_yaml_and_unknown_routes(
    client: TestClient[Any, Any], s3lab: S3Lab
) -> None:
    spec = s3lab.spec()
    replace_r2(s3lab, spec, None)
    status, report = await validate(client, spec, dry_run=True)
    assert (
        status == 200 and report["ok"] and report["dry_run"] and "no storage was accessed" in report["note"]
    )
    status, report = await validate(client, spec)
    assert not report["ok"] and report["estimate"]["unsized_inputs"] == [spec["samples"][0]["r2"]]
    bad_flag = await client.post("/api/v1/worksets/validate?dry_run=maybe", json=spec, headers=ACME)
    assert bad_flag.status == 400 and (await bad_flag.json())["code"] == "INVALID_PARAMETER"
    schema = await (await client.get("/api/v1/schema")).json()
    assert {"name", "tenant", "samples"} <= set(schema["required"])
    generated = await client.post("/api/v1/worksets/generate-yaml", json=spec, headers=ACME)
    files = (await generated.json())["files"]
    assert set(files) == {"daylily_work.yaml", "stage_samples.tsv", "daylily_info.yaml"}
    assert yaml.safe_load(files["daylily_info.yaml"])["customer_id"] == "acme"
    unreadable = await client.post("/api/v1/worksets/generate-yaml", json={"name": 1}, headers=ACME)
    assert unreadable.status == 422 and (await unreadable.json())["code"] == "VALIDATION_FAILED"
    for method, path, code in (
        ("GET", "/api/v1/nope", "NOT_FOUND"),
        ("DELETE", "/api/v1/schema", "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/worksets/ws-unknown", "WORKSET_NOT_FOUND"),
    ):
        response = await client.request(method, path)
        assert (await response.json())["code"] == code


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 20}},
            }
        ]
    }


async def test_s3_event_picks_a_drop_up_in_its_own_request_and_it_is_visible(
    client: TestClient[Any, Any], s3lab: S3Lab, pool: asyncpg.Pool
) -> None:
    folder = s3lab.drop_folder("evented")
    # The event's own request submits the drop (no wait for the poller); how fast is bench/ business.
    response = await client.post("/api/v1/s3-events", json=s3_event(s3lab.bucket, folder + sentinels.READY))
    body = await response.json()
    [picked] = body["folders"]
    assert picked["action"] == "submitted", body
    assert s3lab.exists(folder + sentinels.IN_PROGRESS)  # daylily.ready -> daylily.in_progress
    detail = await (await client.get(f"/api/v1/worksets/{picked['workset_id']}", headers=ACME)).json()
    assert detail["name"] == "evented" and detail["history"][0]["reason"] == "submitted via s3"
    again = await (
        await client.post("/api/v1/s3-events", json=s3_event(s3lab.bucket, folder + sentinels.READY))
    ).json()
    assert again["folders"][0]["action"] == "skipped" and await count(pool) == 1
    other = await (
        await client.post("/api/v1/s3-events", json=s3_event("not-watched", f"{DROP_PREFIX}x/daylily.ready"))
    ).json()
    assert other["folders"] == [] and "not in STAMEN_DROP_BUCKETS" in other["ignored"][0]
    invalid = await client.post("/api/v1/s3-events", json={"hello": "world"})
    assert invalid.status == 400 and (await invalid.json())["code"] == "S3_EVENT_INVALID"


async def test_pages_still_render(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")
    assert response.status == 200 and "text/html" in response.headers["Content-Type"]
    assert "Local demo mode" in await response.text()  # auth is off here, and the page says so
