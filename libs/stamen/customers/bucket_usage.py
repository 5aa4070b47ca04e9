"""How many bytes a customer's bucket holds, measured once for the storage quota and every usage report.

One decision for every caller: a bucket that does not exist (not created yet, or deleted) holds 0 bytes;
any other listing failure (no access, an outage, a timeout) is StorageNotMeasured, never a guess.

Listing a bucket reads every object's key, so the quota check at submission keeps each tenant's figure
for a short while (BucketUsageCache, 60 s by default): a burst of submissions lists the bucket once, and
concurrent callers share one listing. The price is that freeing space takes up to that long to count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from stamen.auth.cognito import aws_code
from stamen.customers import cloud
from stamen.customers.model import CustomerError

BUCKET_USAGE_TTL_SECONDS = 60.0
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})


class StorageNotMeasured(CustomerError):
    """The bucket could not be listed, so its usage (and any quota depending on it) is unknown."""

    code = "STORAGE_NOT_MEASURED"
    http_status = 503


async def measure_bucket(s3: Any, bucket: str) -> int:
    """Bytes in `bucket` now (current object versions); 0 for a bucket that does not exist."""
    try:
        return await cloud.bucket_bytes(s3, bucket)
    except ClientError as exc:
        code = aws_code(exc)
        if code in _MISSING_BUCKET_CODES:
            return 0
        raise StorageNotMeasured(
            f"listing s3://{bucket} failed ({code or exc})", bucket=bucket, cause=code or str(exc)
        ) from exc
    except (BotoCoreError, OSError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise StorageNotMeasured(
            f"listing s3://{bucket} failed ({reason})", bucket=bucket, cause=reason
        ) from exc


class BucketUsageCache:
    """Measured bucket sizes per (customer, bucket), each kept `ttl_seconds` from when its listing began.

    Failures are not kept: the next caller lists again. `clock` is injectable for tests (monotonic seconds).
    """

    def __init__(
        self, ttl_seconds: float = BUCKET_USAGE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._measured: dict[tuple[str, str], tuple[float, int]] = {}
        self._listing: dict[tuple[str, str], asyncio.Task[int]] = {}

    async def bytes_used(self, s3: Any, customer_id: str, bucket: str) -> int:
        key = (customer_id, bucket)
        hit = self._measured.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        loop = asyncio.get_running_loop()
        listing = self._listing.get(key)
        # A task of another event loop can only be left over from a loop that ended (tests): ignore it.
        if listing is None or listing.get_loop() is not loop:
            listing = loop.create_task(self._measure(s3, key))
            self._listing[key] = listing
            listing.add_done_callback(lambda done: self._finished(key, done))
        # shield: one caller giving up (its request was cancelled) does not cancel the others' listing.
        return await asyncio.shield(listing)

    async def _measure(self, s3: Any, key: tuple[str, str]) -> int:
        started = self._clock()
        used = await measure_bucket(s3, key[1])
        now = self._clock()
        # Expired entries go here, so tenants that stopped submitting do not stay in memory.
        self._measured = {k: v for k, v in self._measured.items() if now - v[0] < self._ttl}
        self._measured[key] = (started, used)
        return used

    def _finished(self, key: tuple[str, str], done: asyncio.Task[int]) -> None:
        if self._listing.get(key) is done:
            del self._listing[key]
        if not done.cancelled():
            done.exception()  # retrieved: when every waiter gave up, asyncio does not log it as lost


# The process's cache for callers that do not bring their own (the validator's quota check).
SHARED_BUCKET_USAGE = BucketUsageCache()
