"""The storage quota at submission, for every intake path: while an onboarded customer's bucket holds more
than its `max_storage_gb`, its new worksets are rejected (QUOTA-STORAGE-001).

The validator service runs this for each submitted workset, so HTTP, NATS, S3 drops and `stamen submit`
are all covered (the portal also refuses at once, before submitting). Tenants without a `customers` row
(the local demo, the drop default tenant) have no quota. Usage is measured the way the customers'
usage report measures it (`stamen.customers.cloud.bucket_bytes`).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from stamen.customers import cloud
from stamen.customers.repository import CustomerRepository
from stamen.customers.usage import GB, StorageQuotaExceeded, check_storage_quota
from stamen.worksets import Finding
from stamen.worksets.findings import finding


async def storage_quota_findings(pool: asyncpg.Pool, s3: Any, tenant: str) -> list[Finding]:
    """[] when within quota or not a customer; QUOTA-STORAGE-001 when over it; SNF-OBJ-006 when the
    bucket could not be listed (no access, outage: the validator retries such a workset before rejecting
    it). A customer bucket that does not exist holds 0 bytes."""
    async with pool.acquire() as conn:
        customer = await CustomerRepository(conn).get(tenant)
    if customer is None:
        return []
    bucket = f"s3://{customer.s3_bucket}"
    try:
        used = await cloud.bucket_bytes(s3, customer.s3_bucket)
    except ClientError as exc:
        if _code(exc) not in ("NoSuchBucket", "404", "NotFound"):
            return [_unmeasured(tenant, bucket, _code(exc) or str(exc))]
        used = 0  # a bucket that does not exist (yet, or any more) holds nothing
    except (BotoCoreError, OSError, TimeoutError) as exc:
        return [_unmeasured(tenant, bucket, str(exc) or type(exc).__name__)]
    try:
        check_storage_quota(used_bytes=used, max_storage_gb=customer.max_storage_gb)
    except StorageQuotaExceeded:
        return [
            finding(
                "QUOTA-STORAGE-001",
                "tenant",
                f"tenant {tenant}: {bucket} holds {used / GB:.3f} GB ({used} bytes), more than its "
                f"storage quota of {customer.max_storage_gb:g} GB (max_storage_gb)",
            )
        ]
    return []


def _code(exc: ClientError) -> str:
    error: Any = exc.response.get("Error", {})
    return str(error.get("Code") or "")


def _unmeasured(tenant: str, bucket: str, reason: str) -> Finding:
    return finding(
        "SNF-OBJ-006",
        "tenant",
        f"the storage quota of tenant {tenant} was not checked: listing {bucket} failed ({reason})",
    )
