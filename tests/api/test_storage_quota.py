"""The storage quota at POST /api/v1/worksets, with auth on: the same check the validator runs
(stamen.customers.usage.check_customer_storage), so a bucket that does not exist holds 0 bytes here too."""

from __future__ import annotations

from typing import Any

import boto3

from tests.api.conftest import World
from tests.intake.s3kit import grant

SPEC = {
    "name": "quota-probe",
    "pipeline": "fastq-qc",
    "reference_genome": "GRCh38",
    "samples": [
        {
            "id": "S1",
            "platform": "ILLUMINA",
            "r1": "s3://lab-inputs/S1_R1.fastq.gz",
            "r2": "s3://lab-inputs/S1_R2.fastq.gz",
        }
    ],
}


async def test_over_quota_is_refused_and_a_missing_bucket_holds_nothing(
    world: World, moto_endpoint: str
) -> None:
    async with world.pool.acquire() as conn:
        bucket = await conn.fetchval("SELECT s3_bucket FROM customers WHERE customer_id = $1", world.a.id)
        await conn.execute(
            "UPDATE customers SET max_storage_gb = 0.000001 WHERE customer_id = $1", world.a.id
        )
        await conn.execute(
            "UPDATE customers SET max_storage_gb = 0, s3_bucket = 'stamen-no-such-bucket-q' WHERE customer_id = $1",
            world.b.id,
        )
    s3: Any = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-west-2")
    s3.put_object(Bucket=bucket, Key="results/old.bam", Body=b"x" * 1500)

    over = await world.client.post("/api/v1/worksets", json=SPEC, headers=world.key(world.a))
    body = await over.json()
    assert (over.status, body["code"]) == (409, "STORAGE_QUOTA_EXCEEDED")
    assert body["details"] == {
        "used_bytes": 1500,
        "incoming_bytes": 0,
        "max_storage_gb": 0.000001,
        "bucket": bucket,
    }

    await grant(world.pool, world.b.id, "lab-inputs", "read-only")  # where its reads are
    empty = await world.client.post("/api/v1/worksets", json=SPEC, headers=world.key(world.b))
    assert empty.status == 201, await empty.text()  # 0 bytes is not over a 0 GB quota
