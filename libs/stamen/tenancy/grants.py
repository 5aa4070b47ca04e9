"""Bucket rights in PostgreSQL: a tenant's own bucket (customers.s3_bucket) and the grants operators make
(`bucket_grants`, migration 0011). The SQL is here; the rule is `stamen.tenancy.buckets.may_access`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg

from stamen.domain.workset import InvalidTenantId, check_tenant_id
from stamen.errors import CodedError
from stamen.store.db import Connection
from stamen.tenancy.buckets import GRANT_ACCESS, BucketRight, GrantAccess, TenantBuckets
from stamen.worksets.rules import valid_bucket_name

MAX_NOTE = 500


class BucketGrantError(CodedError):
    code = "BUCKET_GRANT_INVALID"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, **({"field": field} if field else {}))


class BucketGrantInvalid(BucketGrantError):
    code = "BUCKET_GRANT_INVALID"


class BucketGrantNotFound(BucketGrantError):
    code = "BUCKET_GRANT_NOT_FOUND"
    http_status = 404


@dataclass(frozen=True)
class BucketGrant:
    tenant_id: str
    bucket: str
    access: GrantAccess
    granted_by: str
    note: str
    granted_at: datetime


def tenant_rights_sql(tenant: str) -> str:
    """The rows of every bucket the tenant whose id is the placeholder `tenant` may use: its own bucket (if
    it is a customer) and its grants (bucket, access, source, granted_by, note, ord), in no order; order
    them by TENANT_RIGHTS_ORDER. A subquery, so that a statement reading more (the scheduler's dispatch
    facts) reads them too."""
    return f"""SELECT s3_bucket AS bucket, 'read-write' AS access, 'own' AS source, NULL AS granted_by,
                      '' AS note, 0 AS ord
                 FROM customers WHERE customer_id = {tenant}
               UNION ALL
               SELECT bucket, access, 'grant', granted_by, note, 1 FROM bucket_grants WHERE tenant_id = {tenant}"""


TENANT_RIGHTS_ORDER = "ord, bucket"  # its own bucket first, then its grants


def tenant_buckets_of(tenant_id: str, rights: Sequence[Sequence[Any]]) -> TenantBuckets:
    """TenantBuckets from the rows of `tenant_rights_sql` as (bucket, access, source, granted_by, note)."""
    return TenantBuckets(
        tenant_id,
        tuple(BucketRight(bucket, access, source, by, note) for bucket, access, source, by, note in rights),
    )


def _grant(row: Any) -> BucketGrant:
    return BucketGrant(
        row["tenant_id"],
        row["bucket"],
        cast(GrantAccess, row["access"]),
        row["granted_by"],
        row["note"],
        row["granted_at"],
    )


def check_grant(tenant_id: str, bucket: str, access: str, note: str = "") -> None:
    """Raises BucketGrantInvalid naming the field: a tenant id, an S3 bucket name, read-only/read-write."""
    try:
        check_tenant_id(tenant_id)
    except InvalidTenantId as exc:
        raise BucketGrantInvalid(str(exc), field="tenant") from None
    if not valid_bucket_name(bucket):
        raise BucketGrantInvalid(
            f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, dots and hyphens)",
            field="bucket",
        )
    if access not in GRANT_ACCESS:
        raise BucketGrantInvalid(
            f"access must be one of {', '.join(GRANT_ACCESS)}, got {access!r}", field="access"
        )
    if len(note) > MAX_NOTE or any(ch in note for ch in "\x00\r\n"):
        raise BucketGrantInvalid(f"note must be one line of at most {MAX_NOTE} characters", field="note")


class BucketGrantRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def tenant_buckets(self, tenant_id: str) -> TenantBuckets:
        """What `tenant_id` may use: its own bucket first (if it is a customer), then its grants."""
        rows = await self._conn.fetch(
            f"SELECT * FROM ({tenant_rights_sql('$1')}) r ORDER BY {TENANT_RIGHTS_ORDER}", tenant_id
        )
        return tenant_buckets_of(
            tenant_id, [(r["bucket"], r["access"], r["source"], r["granted_by"], r["note"]) for r in rows]
        )

    async def grant(
        self, tenant_id: str, bucket: str, access: GrantAccess, *, granted_by: str, note: str = ""
    ) -> tuple[BucketGrant, bool]:
        """Grant (or change) a tenant's access to a bucket; (the grant, whether it is new)."""
        check_grant(tenant_id, bucket, access, note)
        row = await self._conn.fetchrow(
            """INSERT INTO bucket_grants (tenant_id, bucket, access, granted_by, note)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (tenant_id, bucket) DO UPDATE
                   SET access = EXCLUDED.access, granted_by = EXCLUDED.granted_by, note = EXCLUDED.note,
                       granted_at = now()
               RETURNING *, (xmax = 0) AS created""",
            tenant_id, bucket, access, granted_by, note,
        )  # fmt: skip
        assert row is not None
        return _grant(row), bool(row["created"])

    async def revoke(self, tenant_id: str, bucket: str) -> BucketGrant:
        row = await self._conn.fetchrow(
            "DELETE FROM bucket_grants WHERE tenant_id = $1 AND bucket = $2 RETURNING *", tenant_id, bucket
        )
        if row is None:
            raise BucketGrantNotFound(f"tenant {tenant_id} has no grant on bucket {bucket}", field="bucket")
        return _grant(row)

    async def grants(self, tenant_id: str | None = None) -> list[BucketGrant]:
        rows = await self._conn.fetch(
            "SELECT * FROM bucket_grants WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, bucket",
            tenant_id,
        )
        return [_grant(r) for r in rows]


async def tenant_buckets(pool: asyncpg.Pool, tenant_id: str) -> TenantBuckets:
    """The buckets `tenant_id` may use, read on a connection of its own."""
    async with pool.acquire() as conn:
        return await BucketGrantRepository(conn).tenant_buckets(tenant_id)
