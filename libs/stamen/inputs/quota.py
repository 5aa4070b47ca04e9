"""The storage quota at submission, for every intake path: while an onboarded customer's bucket holds more
than its `max_storage_gb`, its new worksets are rejected (QUOTA-STORAGE-001).

The validator service runs this for each submitted workset, so HTTP, NATS, S3 drops and `stamen submit`
are all covered (the portal also refuses at once, before submitting). The check itself is the portal's:
`stamen.customers.usage.check_customer_storage` (the customer's quota, its bucket measured as the usage
report measures it, a missing bucket holding 0 bytes, the figure cached up to 60 s per tenant); this module
turns its outcome into findings. Tenants without a `customers` row (the local demo, the drop default
tenant) have no quota.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from stamen.customers.bucket_usage import BucketUsageCache, StorageNotMeasured
from stamen.customers.model import Customer
from stamen.customers.repository import CustomerRepository
from stamen.customers.usage import GB, StorageQuotaExceeded, check_storage_of
from stamen.worksets import Finding
from stamen.worksets.findings import finding


async def storage_quota_findings(
    pool: asyncpg.Pool, s3: Any, tenant: str, *, cache: BucketUsageCache | None = None
) -> list[Finding]:
    """[] when within quota or not a customer; QUOTA-STORAGE-001 when over it; SNF-OBJ-006 when the
    bucket could not be listed (no access, outage: the validator retries such a workset before rejecting
    it). `cache`: see check_customer_storage (default: the process's)."""
    async with pool.acquire() as conn:
        customer = await CustomerRepository(conn).get(tenant)
    return await customer_quota_findings(customer, s3, tenant, cache=cache)


async def customer_quota_findings(
    customer: Customer | None, s3: Any, tenant: str, *, cache: BucketUsageCache | None = None
) -> list[Finding]:
    """storage_quota_findings for a customer row the caller has read already (None: not a customer)."""
    if customer is None:
        return []
    try:
        await check_storage_of(customer, s3, cache=cache)
    except StorageNotMeasured as exc:
        return [
            finding(
                "SNF-OBJ-006",
                "tenant",
                f"the storage quota of tenant {tenant} was not checked: {exc}",
            )
        ]
    except StorageQuotaExceeded as exc:
        used, quota = exc.details["used_bytes"], exc.details["max_storage_gb"]
        return [
            finding(
                "QUOTA-STORAGE-001",
                "tenant",
                f"tenant {tenant}: s3://{exc.details['bucket']} holds {used / GB:.3f} GB ({used} bytes), more "
                f"than its storage quota of {quota:g} GB (max_storage_gb)",
            )
        ]
    return []
