"""Admission's reads of the queue (skip scans over worksets_queue_heads) give what a plain reading
of the queue gives: the oldest queued workset per (tenant, priority) with its input buckets, and when
each queued tenant was last admitted."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from stamen.store.unit_of_work import UnitOfWork

T0 = datetime(2030, 1, 1, tzinfo=UTC)
# Samples as specs carry them, with what admission must make of them: only s3:// r1/r2 strings count.
SAMPLES: list[Any] = [
    [{"id": "a", "r1": "s3://lab-1/x_R1.fastq.gz", "r2": "s3://lab-1/x_R2.fastq.gz"}],
    [{"id": "a", "r1": "s3://lab-2/x.fq"}, {"id": "b", "r1": "s3://lab-1/y.fq", "r2": "s3://Lab-0/z"}],
    [{"id": "a", "r1": "/local/x.fq", "r2": 7}, "not a sample"],
    [{"id": "a", "r1": "s3://", "r2": "s3://only-bucket"}],
    "samples that are not a list",
    None,
]


def expected_buckets(spec: dict[str, Any]) -> tuple[str, ...]:
    buckets = set()
    samples = spec.get("samples")
    for sample in samples if isinstance(samples, list) else []:
        if isinstance(sample, dict):
            for key in ("r1", "r2"):
                uri = sample.get(key)
                if isinstance(uri, str) and uri.startswith("s3://"):
                    buckets.add(uri[5:].split("/", 1)[0])
    return tuple(sorted(buckets))


async def test_queue_heads_and_last_admissions_match_a_plain_reading_of_the_queue(pool: asyncpg.Pool) -> None:
    rng = random.Random(18)
    rows = []
    for i in range(400):
        spec: dict[str, Any] = {"name": f"w{i}"}
        if (samples := rng.choice(SAMPLES)) is not None:
            spec["samples"] = samples
        if rng.random() < 0.2:
            spec["preferred_cluster"] = rng.choice(["east", "west"])
        rows.append((
            f"ws-{i:04d}", f"t{rng.randrange(12):02d}", rng.choice(["urgent", "normal", "low"]),
            rng.choice(["queued"] * 4 + ["running", "completed"]),
            T0 + timedelta(seconds=rng.randrange(50)),  # ties on queued_at: the id decides
            spec,
        ))  # fmt: skip
    async with pool.acquire() as conn:
        await conn.executemany(
            """INSERT INTO worksets (id, tenant_id, name, state, region, priority, spec, correlation_id, queued_at)
               VALUES ($1, $2, $1, $4, 'us-west-2', $3, $6::jsonb, $7, $5)""",
            [(*r[:5], json.dumps(r[5]), uuid.uuid4()) for r in rows],
        )
        # Admissions in the past of half the tenants, several each.
        await conn.executemany(
            """INSERT INTO workset_runs (workset_id, attempt, tenant_id, cluster, holder, admitted_at)
               VALUES ($1, $2, $3, 'c', 'h', $4)""",
            [(r[0], 1, r[1], T0 - timedelta(minutes=rng.randrange(600))) for r in rows if r[1] < "t06"],
        )
        runs = await conn.fetch(
            "SELECT tenant_id, max(admitted_at) AS at FROM workset_runs GROUP BY tenant_id"
        )

    queued = sorted((r for r in rows if r[3] == "queued"), key=lambda r: (r[1], r[2], r[4], r[0]))
    heads: dict[tuple[str, str], tuple[Any, ...]] = {}
    for r in queued:
        heads.setdefault((r[1], r[2]), r)
    async with UnitOfWork(pool) as uow:
        got = await uow.slots.queue_heads()
        last = await uow.slots.last_admitted()
        last_of_heads = await uow.slots.last_admitted([h.tenant_id for h in got])

    assert [(h.tenant_id, h.priority, h.workset_id) for h in got] == [
        (k[0], k[1], r[0]) for k, r in heads.items()
    ]
    async with UnitOfWork(pool) as uow:
        got = [await uow.slots.head_facts(head) for head in got]
    for head in got:
        spec = heads[(head.tenant_id, head.priority)][5]
        assert head.data_locations == expected_buckets(spec), spec
        assert head.preferred_cluster == spec.get("preferred_cluster")
        assert head.queued_at == heads[(head.tenant_id, head.priority)][4]
    queued_tenants = {r[1] for r in queued}
    assert last == {r["tenant_id"]: r["at"] for r in runs if r["tenant_id"] in queued_tenants}
    assert last_of_heads == last  # the heads' tenants are the queued tenants


async def test_an_empty_queue_has_no_heads(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.queue_heads() == []
        assert await uow.slots.last_admitted() == {}
