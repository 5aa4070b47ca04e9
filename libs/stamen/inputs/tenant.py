"""What intake reads about a submission's tenant: the buckets it may use and its customer row (the storage
quota), in one statement: the validator in the transaction that reads the workset, the portal before it
submits."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from stamen.customers.model import Customer
from stamen.customers.repository import customer_from_row
from stamen.store.db import Connection
from stamen.tenancy import TenantBuckets
from stamen.tenancy.grants import TENANT_RIGHTS_ORDER, tenant_buckets_of, tenant_rights_sql


@dataclass(frozen=True)
class TenantFacts:
    tenant_id: str
    rights: TenantBuckets
    customer: Customer | None  # None: not an onboarded customer, so no storage quota


# The customer row (NULLs when the tenant is not a customer) and the tenant's rights as one array per column
# (built-in types: nothing for asyncpg to look up): what BucketGrantRepository.tenant_buckets and
# CustomerRepository.get read, in one round trip instead of two.
_ORDER = f"ORDER BY {TENANT_RIGHTS_ORDER}"
_TENANT_FACTS = f"""
    SELECT c.*, r.*
    FROM (SELECT) AS one
    LEFT JOIN customers c ON c.customer_id = $1
    CROSS JOIN (SELECT array_agg(bucket {_ORDER}) AS r_buckets, array_agg(access {_ORDER}) AS r_access,
                       array_agg(source {_ORDER}) AS r_sources, array_agg(granted_by {_ORDER}) AS r_granted_by,
                       array_agg(note {_ORDER}) AS r_notes
                FROM ({tenant_rights_sql("$1")}) rights) r"""
_RIGHTS = ("r_buckets", "r_access", "r_sources", "r_granted_by", "r_notes")


async def read_tenant(conn: Connection, tenant_id: str) -> TenantFacts:
    row = await conn.fetchrow(_TENANT_FACTS, tenant_id)
    assert row is not None  # the joins of one row with one aggregate: always one
    rights = list(zip(*(row[column] or [] for column in _RIGHTS), strict=True))
    return TenantFacts(
        tenant_id,
        tenant_buckets_of(tenant_id, rights),
        customer_from_row(row) if row["customer_id"] is not None else None,
    )


async def tenant_facts(pool: asyncpg.Pool, tenant_id: str) -> TenantFacts:
    """`read_tenant` on a connection of its own."""
    async with pool.acquire() as conn:
        return await read_tenant(conn, tenant_id)
