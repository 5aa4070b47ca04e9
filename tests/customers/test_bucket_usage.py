"""Measured bucket usage (moto S3): a missing bucket holds 0 bytes, a failed listing is StorageNotMeasured,
and the quota check's cache lists a tenant's bucket once per TTL however many submissions arrive."""

from __future__ import annotations

import asyncio
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import asyncpg
import boto3
import pytest
from botocore.config import Config

from stamen.customers import BucketUsageCache, StorageNotMeasured, StorageQuotaExceeded
from stamen.customers.bucket_usage import measure_bucket
from stamen.customers.cloud import open_clients
from stamen.customers.usage import check_customer_storage
from tests.customers.awskit import customer_settings, unique
from tests.intake.test_quota import customer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_listings(s3: Any) -> list[str]:
    """One entry per ListObjectsV2 call the client makes (botocore's own event hook)."""
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append("list"))
    return calls


async def test_a_burst_lists_the_bucket_once_per_ttl(pool: asyncpg.Pool, moto_endpoint: str) -> None:
    sync: Any = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-west-2")
    bucket = unique("quota")
    sync.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    sync.put_object(Bucket=bucket, Key="a.bin", Body=b"x" * 900)
    await customer(pool, "burst", bucket=bucket, max_storage_gb=0.000001)  # 1000 bytes
    clock = Clock()
    cache = BucketUsageCache(ttl_seconds=60, clock=clock)
    async with open_clients(customer_settings(moto_endpoint)) as aws:
        listings = count_listings(aws.s3)
        # Ten concurrent submissions share one listing.
        used = await asyncio.gather(
            *(check_customer_storage(pool, aws.s3, "burst", cache=cache) for _ in range(10))
        )
        assert used == [900] * 10 and len(listings) == 1
        # The bucket grows past the quota, but for the TTL the figure measured stands.
        sync.put_object(Bucket=bucket, Key="b.bin", Body=b"y" * 200)
        clock.now += 59
        assert await check_customer_storage(pool, aws.s3, "burst", cache=cache) == 900
        assert len(listings) == 1
        clock.now += 1  # 60 s after the listing began: measured again
        with pytest.raises(StorageQuotaExceeded) as over:
            await check_customer_storage(pool, aws.s3, "burst", cache=cache)
        assert over.value.details == {
            "used_bytes": 1100,
            "incoming_bytes": 0,
            "max_storage_gb": 0.000001,
            "bucket": bucket,
        }
        assert len(listings) == 2
        # Another cache (another process) measures for itself.
        assert await BucketUsageCache().bytes_used(aws.s3, "burst", bucket) == 1100
        assert len(listings) == 3


async def test_a_missing_bucket_holds_nothing_and_a_failed_listing_is_not_kept(
    pool: asyncpg.Pool, moto_endpoint: str
) -> None:
    await customer(pool, "gone", bucket=unique("never-created"), max_storage_gb=0)
    cache = BucketUsageCache(clock=Clock())
    async with open_clients(customer_settings(moto_endpoint)) as aws:
        assert await check_customer_storage(pool, aws.s3, "gone", cache=cache) == 0  # at 0 GB, not over
        assert await measure_bucket(aws.s3, unique("never-created")) == 0
    once = Config(retries={"total_max_attempts": 1}, connect_timeout=2)
    session = aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    async with session.client(
        "s3", region_name="us-west-2", endpoint_url="http://127.0.0.1:9", config=once
    ) as s3:
        listings = count_listings(s3)
        for _ in range(2):
            with pytest.raises(StorageNotMeasured) as failed:
                await cache.bytes_used(s3, "down", "some-bucket")
            assert failed.value.code == "STORAGE_NOT_MEASURED"
            assert str(failed.value).startswith("listing s3://some-bucket failed (")
        assert len(listings) == 2  # the failure was not kept: the second call listed again
