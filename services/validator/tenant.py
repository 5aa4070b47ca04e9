"""What the validator reads about a submission's tenant: the buckets it may use and its customer row (the
storage quota). Read in the transaction that reads the workset, not in transactions of their own."""

from __future__ import annotations

from dataclasses import dataclass

from stamen.customers.model import Customer
from stamen.customers.repository import CustomerRepository
from stamen.store.db import Connection
from stamen.tenancy import BucketGrantRepository, TenantBuckets


@dataclass(frozen=True)
class TenantFacts:
    tenant_id: str
    rights: TenantBuckets
    customer: Customer | None  # None: not an onboarded customer, so no storage quota


async def read_tenant(conn: Connection, tenant_id: str) -> TenantFacts:
    return TenantFacts(
        tenant_id,
        await BucketGrantRepository(conn).tenant_buckets(tenant_id),
        await CustomerRepository(conn).get(tenant_id),
    )
