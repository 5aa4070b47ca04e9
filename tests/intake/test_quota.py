"""The storage quota at submission (stamen.inputs.quota) against moto and PostgreSQL."""

from __future__ import annotations

import asyncpg

from stamen.customers import NewCustomer
from stamen.customers.repository import CustomerRepository
from stamen.inputs import IntakeSettings, open_object_store
from stamen.inputs.quota import storage_quota_findings
from stamen.settings import Settings
from tests.intake.s3kit import S3Lab


async def customer(pool: asyncpg.Pool, customer_id: str, *, bucket: str, max_storage_gb: float) -> None:
    new = NewCustomer.create(
        customer_name=customer_id,
        email=f"ops@{customer_id}.example.org",
        customer_id=customer_id,
        max_concurrent_worksets=1,
        max_storage_gb=max_storage_gb,
    )
    async with pool.acquire() as conn:
        assert await CustomerRepository(conn).insert_onboarding(new, s3_bucket=bucket, region="us-west-2")


async def test_measured_usage_against_the_quota(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    twin = s3lab.new_bucket()
    for bucket in (s3lab.bucket, twin):
        s3lab.put("a/one.bin", b"x" * 600, bucket=bucket)
        s3lab.put("b/deeper/two.bin", b"x" * 400, bucket=bucket)
    await customer(pool, "tight", bucket=s3lab.bucket, max_storage_gb=0.000000999)  # 999 bytes
    await customer(pool, "exact", bucket=twin, max_storage_gb=0.000001)  # 1000 bytes: at, not over
    await customer(pool, "gone", bucket="stamen-no-such-bucket-7", max_storage_gb=0)
    async with open_object_store(Settings(AWS_ENDPOINT_URL=s3lab.url), IntakeSettings()) as store:
        [over] = await storage_quota_findings(pool, store.client, "tight")
        assert (over.code, over.field, over.severity) == ("QUOTA-STORAGE-001", "tenant", "error")
        assert over.message == (
            f"tenant tight: s3://{s3lab.bucket} holds 0.000 GB (1000 bytes), more than its "
            "storage quota of 9.99e-07 GB (max_storage_gb)"
        )
        assert await storage_quota_findings(pool, store.client, "exact") == []
        assert await storage_quota_findings(pool, store.client, "no-customer-row") == []
        assert await storage_quota_findings(pool, store.client, "gone") == []  # no bucket: nothing stored


async def test_a_bucket_that_cannot_be_listed_is_a_storage_outage(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    await customer(pool, "acme", bucket=s3lab.bucket, max_storage_gb=0)
    unreachable = Settings(AWS_ENDPOINT_URL="http://127.0.0.1:9")
    async with open_object_store(unreachable, IntakeSettings(storage_timeout_seconds=0.5)) as store:
        [finding] = await storage_quota_findings(pool, store.client, "acme")
    assert (finding.code, finding.field) == ("SNF-OBJ-006", "tenant")
    assert finding.message.startswith(
        f"the storage quota of tenant acme was not checked: listing s3://{s3lab.bucket}"
    )
