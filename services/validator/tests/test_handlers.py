"""The validator's handler against the real store: queued or rejected, once per event."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from stamen.bus.consumer import Delivery
from stamen.events import decode_envelope
from stamen.intake import submit_workset
from stamen.service.idempotent import idempotent
from stamen.store.unit_of_work import UnitOfWork

from services.validator.app import CONSUMER
from services.validator.handlers import validate_submitted

GOOD_SPEC: dict[str, Any] = {
    "name": "wgs-batch-7",
    "pipeline": "fastq-qc",
    "reference_genome": "GRCh38",
    "samples": [
        {"id": "S1", "platform": "ILLUMINA", "r1": "s3://lab/S1_R1.fastq.gz", "r2": "s3://lab/S1_R2.fastq.gz"}
    ],
}
DELIVERY = Delivery(subject="stamen.evt.acme.workset.submitted", stream_seq=1, num_delivered=1, headers={})


async def submit_and_get_event(pool: asyncpg.Pool, spec: dict[str, Any]):  # type: ignore[no-untyped-def]
    result = await submit_workset(pool, tenant_id="acme", name="w", spec=spec, region="us-west-2", source="api",
                                  actor="test")  # fmt: skip
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM outbox WHERE subject LIKE '%workset.submitted'")
    return result.workset_id, decode_envelope(bytes(body))


async def outbox_types(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    return [json.loads(bytes(r["body"]))["type"] for r in rows]


async def test_valid_spec_is_queued_with_events_chained_to_the_submission(pool: asyncpg.Pool) -> None:
    ws_id, event = await submit_and_get_event(pool, GOOD_SPEC)
    handler = idempotent(CONSUMER, lambda: pool, validate_submitted)
    await handler(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        history = await uow.worksets.history(ws_id)
    assert ws.state.value == "queued"
    assert [h.to_state for h in history] == ["submitted", "validating", "queued"]
    assert await outbox_types(pool) == ["workset.submitted", "workset.validated", "workset.queued"]
    async with pool.acquire() as conn:
        bodies = [
            json.loads(bytes(r["body"])) for r in await conn.fetch("SELECT body FROM outbox ORDER BY id")
        ]
    assert all(b["correlation_id"] == str(event.correlation_id) for b in bodies)
    assert bodies[1]["causation_id"] == str(event.id) and bodies[1]["tenant_id"] == "acme"


async def test_redelivered_event_has_no_second_effect(pool: asyncpg.Pool) -> None:
    ws_id, event = await submit_and_get_event(pool, GOOD_SPEC)
    handler = idempotent(CONSUMER, lambda: pool, validate_submitted)
    await handler(event, DELIVERY)
    await handler(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        assert len(await uow.worksets.history(ws_id)) == 3
    assert len(await outbox_types(pool)) == 3


async def test_invalid_spec_is_rejected_with_every_finding(pool: asyncpg.Pool) -> None:
    bad = {"name": "w", "pipeline": "teleport", "max_retries": 99, "samples": []}
    ws_id, event = await submit_and_get_event(pool, bad)
    await idempotent(CONSUMER, lambda: pool, validate_submitted)(event, DELIVERY)
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
    assert ws.state.value == "rejected"
    async with pool.acquire() as conn:
        body = await conn.fetchval("SELECT body FROM outbox WHERE subject LIKE '%workset.rejected'")
    findings = json.loads(bytes(body))["payload"]["findings"]
    fields = {f["field"] for f in findings}
    assert {"pipeline", "max_retries"} <= fields, findings
    assert all(f["code"] and f["message"] and f["fix"] for f in findings)
