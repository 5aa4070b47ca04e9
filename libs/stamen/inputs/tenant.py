"""What intake reads about a submission's tenant: the buckets it may use and its customer row (the storage
quota), in one statement: the validator with the workset it reads and locks (`workset_and_tenant`), the
portal before it submits (`read_tenant`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from stamen.customers.model import Customer
from stamen.customers.repository import customer_from_row
from stamen.domain.workset import Workset
from stamen.store.db import Connection
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import TenantBuckets
from stamen.tenancy.grants import TENANT_RIGHTS_ORDER, tenant_buckets_of, tenant_rights_sql


@dataclass(frozen=True)
class TenantFacts:
    tenant_id: str
    rights: TenantBuckets
    customer: Customer | None  # None: not an onboarded customer, so no storage quota


# Select-list items about the tenant whose id is `w.tenant_id`: its customer row (as json, NULL when the
# tenant is not a customer) and its rights, one text array (bucket, access, source, granted_by, note)
# per bucket: what BucketGrantRepository.tenant_buckets and CustomerRepository.get read, without their
# round trips, and beside whatever else the statement reads (the validator's workset). The row is json,
# not the table's composite type: asyncpg knows no composite, so it would ask the server about
# `customers`' type on every new connection (a recursive catalog query, ~4 ms of PostgreSQL).
_TENANT_COLUMNS = f"""
    (SELECT row_to_json(c) FROM customers c WHERE c.customer_id = w.tenant_id) AS tenant_customer,
    (SELECT array_agg(ARRAY[bucket, access, source, granted_by, note] ORDER BY {TENANT_RIGHTS_ORDER})
     FROM ({tenant_rights_sql("w.tenant_id")}) rights) AS tenant_rights"""
_TENANT_FACTS = f"SELECT {_TENANT_COLUMNS} FROM (SELECT $1::text AS tenant_id) w"


def _customer_of(document: str) -> Customer:
    """The Customer of a customers row as row_to_json writes it (timestamps in ISO 8601)."""
    columns = json.loads(document)
    columns["created_at"] = datetime.fromisoformat(columns["created_at"])
    columns["max_storage_gb"] = float(columns["max_storage_gb"])  # json writes 100.0 as 100
    return customer_from_row(columns)


def _facts_from(tenant_id: str, row: Any) -> TenantFacts:
    customer = row["tenant_customer"]
    return TenantFacts(
        tenant_id,
        tenant_buckets_of(tenant_id, row["tenant_rights"] or []),
        _customer_of(customer) if customer is not None else None,
    )


async def read_tenant(conn: Connection, tenant_id: str) -> TenantFacts:
    row = await conn.fetchrow(_TENANT_FACTS, tenant_id)
    assert row is not None  # one row of scalar subqueries: always one
    return _facts_from(tenant_id, row)


async def workset_and_tenant(uow: UnitOfWork, workset_id: str) -> tuple[Workset, TenantFacts]:
    """The workset, read and locked (FOR UPDATE), and its tenant's facts, in one statement (were two)."""
    ws, row = await uow.worksets.get_with(workset_id, _TENANT_COLUMNS)
    return ws, _facts_from(ws.tenant_id, row)


async def tenant_facts(pool: asyncpg.Pool, tenant_id: str) -> TenantFacts:
    """`read_tenant` on a connection of its own."""
    async with pool.acquire() as conn:
        return await read_tenant(conn, tenant_id)
