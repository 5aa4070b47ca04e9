"""CustomerRepository and UsageRepository: every SQL statement about customers and their usage."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stamen.customers.model import Customer, CustomerResource, NewCustomer, ResourceKind
from stamen.store.db import Connection, keeps_session_state


def customer_from_row(r: Any) -> Customer:
    """A Customer from a row with the customers table's columns."""
    return Customer(
        customer_id=r["customer_id"],
        customer_name=r["customer_name"],
        email=r["email"],
        s3_bucket=r["s3_bucket"],
        max_concurrent_worksets=r["max_concurrent_worksets"],
        max_storage_gb=r["max_storage_gb"],
        region=r["region"],
        status=r["status"],
        created_at=r["created_at"],
        billing_account_id=r["billing_account_id"],
        cost_center=r["cost_center"],
        sns_topic_arn=r["sns_topic_arn"],
        cognito_user_pool_id=r["cognito_user_pool_id"],
        admin_username=r["admin_username"],
    )


class CustomerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # Onboarding of one customer is serialised across processes by a session advisory lock.
    async def lock(self, customer_id: str) -> None:
        keeps_session_state(self._conn)  # released by unlock(), or by the pool's reset if that never runs
        await self._conn.execute("SELECT pg_advisory_lock(hashtext('stamen.customer:' || $1))", customer_id)

    async def unlock(self, customer_id: str) -> None:
        await self._conn.execute("SELECT pg_advisory_unlock(hashtext('stamen.customer:' || $1))", customer_id)

    async def get(self, customer_id: str) -> Customer | None:
        row = await self._conn.fetchrow("SELECT * FROM customers WHERE customer_id = $1", customer_id)
        return customer_from_row(row) if row else None

    async def page(
        self, *, status: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Customer]:
        """Keyset pagination on customer_id: pass the last id of a page as `after`."""
        rows = await self._conn.fetch(
            """SELECT * FROM customers
               WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR customer_id > $2)
               ORDER BY customer_id LIMIT $3""",
            status,
            after,
            limit,
        )
        return [customer_from_row(r) for r in rows]

    async def find_by_bucket(self, bucket: str) -> Customer | None:
        row = await self._conn.fetchrow("SELECT * FROM customers WHERE s3_bucket = $1", bucket)
        return customer_from_row(row) if row else None

    async def insert_onboarding(self, new: NewCustomer, *, s3_bucket: str, region: str) -> bool:
        """The row in state 'onboarding'; False when a row with this id already exists."""
        status = await self._conn.execute(
            """INSERT INTO customers (customer_id, customer_name, email, s3_bucket, max_concurrent_worksets,
                                      max_storage_gb, billing_account_id, cost_center, region, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'onboarding')
               ON CONFLICT (customer_id) DO NOTHING""",
            new.customer_id,
            new.customer_name,
            new.email,
            s3_bucket,
            new.max_concurrent_worksets,
            new.max_storage_gb,
            new.billing_account_id,
            new.cost_center,
            region,
        )
        return bool(status == "INSERT 0 1")

    async def activate(
        self, customer_id: str, *, sns_topic_arn: str, cognito_user_pool_id: str, admin_username: str
    ) -> Customer:
        row = await self._conn.fetchrow(
            """UPDATE customers SET status = 'active', sns_topic_arn = $2, cognito_user_pool_id = $3,
                                    admin_username = $4, updated_at = now()
               WHERE customer_id = $1 RETURNING *""",
            customer_id,
            sns_topic_arn,
            cognito_user_pool_id,
            admin_username,
        )
        assert row is not None, f"customer {customer_id} vanished during onboarding"
        return customer_from_row(row)

    async def set_status(self, customer_id: str, status: str) -> Customer | None:
        row = await self._conn.fetchrow(
            "UPDATE customers SET status = $2, updated_at = now() WHERE customer_id = $1 RETURNING *",
            customer_id,
            status,
        )
        return customer_from_row(row) if row else None

    async def delete(self, customer_id: str) -> None:
        """Rollback of an onboarding: the row and its resource records go (api_keys cascade too)."""
        await self._conn.execute("DELETE FROM customers WHERE customer_id = $1", customer_id)

    async def set_tenant_limit(self, tenant_id: str, max_concurrent: int) -> bool:
        """The one writer of a tenant's concurrency quota. Admission enforces tenant_limits (migration 0002),
        so every tenant gets its row, customer or not; a customer's max_concurrent_worksets (shown by the
        portal and `stamen customer`) is kept equal to it. True when the tenant is a customer."""
        await self._conn.execute(
            """INSERT INTO tenant_limits (tenant_id, max_concurrent) VALUES ($1, $2)
               ON CONFLICT (tenant_id) DO UPDATE SET max_concurrent = EXCLUDED.max_concurrent""",
            tenant_id,
            max_concurrent,
        )
        done = await self._conn.execute(
            """UPDATE customers SET max_concurrent_worksets = $2, updated_at = now()
               WHERE customer_id = $1""",
            tenant_id,
            max_concurrent,
        )
        return bool(done == "UPDATE 1")

    async def delete_tenant_limit(self, customer_id: str) -> None:
        await self._conn.execute("DELETE FROM tenant_limits WHERE tenant_id = $1", customer_id)

    async def resources(self, customer_id: str) -> list[CustomerResource]:
        rows = await self._conn.fetch(
            "SELECT kind, name, arn, state FROM customer_resources WHERE customer_id = $1 ORDER BY id",
            customer_id,
        )
        return [
            CustomerResource(kind=r["kind"], name=r["name"], arn=r["arn"], state=r["state"]) for r in rows
        ]

    async def record_resource(
        self, customer_id: str, kind: ResourceKind, name: str, *, state: str, arn: str | None = None
    ) -> None:
        await self._conn.execute(
            """INSERT INTO customer_resources (customer_id, kind, name, arn, state) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (customer_id, kind) DO UPDATE
                 SET name = EXCLUDED.name, arn = coalesce(EXCLUDED.arn, customer_resources.arn),
                     state = EXCLUDED.state""",
            customer_id,
            kind,
            name,
            arn,
            state,
        )

    async def bucket_owners(self, buckets: Collection[str]) -> dict[str, str]:
        """Which of these bucket names are customers' buckets: bucket -> customer_id."""
        rows = await self._conn.fetch(
            "SELECT s3_bucket, customer_id FROM customers WHERE s3_bucket = ANY($1::text[])", list(buckets)
        )
        return {r["s3_bucket"]: r["customer_id"] for r in rows}

    async def forget_resource(self, customer_id: str, kind: ResourceKind) -> None:
        await self._conn.execute(
            "DELETE FROM customer_resources WHERE customer_id = $1 AND kind = $2", customer_id, kind
        )


@dataclass(frozen=True)
class StepUsageRow:
    cluster: str
    region: str | None
    price_factor: float | None
    cpu_seconds: float | None
    elapsed_seconds: float | None


@dataclass(frozen=True)
class EstimateRow:
    workset_id: str
    cost_usd_median: float | None  # None: validated without an estimate, or not validated


class UsageRepository:
    """Raw usage facts for one tenant and one [start, end) window; `stamen.customers.usage` sums them."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def running_by_cluster(self, tenant_id: str) -> dict[str, int]:
        """Slots the tenant holds now, per cluster (its own load only, never other tenants')."""
        rows = await self._conn.fetch(
            "SELECT cluster, count(*) AS n FROM slot_leases WHERE tenant_id = $1 GROUP BY cluster", tenant_id
        )
        return {r["cluster"]: int(r["n"]) for r in rows}

    async def worksets_by_state(self, tenant_id: str, start: datetime, end: datetime) -> dict[str, int]:
        rows = await self._conn.fetch(
            """SELECT state, count(*) AS n FROM worksets
               WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 GROUP BY state""",
            tenant_id,
            start,
            end,
        )
        return {r["state"]: int(r["n"]) for r in rows}

    async def finished_steps(self, tenant_id: str, start: datetime, end: datetime) -> list[StepUsageRow]:
        """Step runs of the tenant that ended in the window, with their cluster's region and price factor."""
        rows = await self._conn.fetch(
            """SELECT s.cluster, c.region, c.price_factor,
                      (s.resources ->> 'cpu_seconds')::double precision AS cpu_seconds,
                      (s.resources ->> 'elapsed_seconds')::double precision AS elapsed_seconds
               FROM step_runs s JOIN worksets w ON w.id = s.workset_id
               LEFT JOIN clusters c ON c.name = s.cluster
               WHERE w.tenant_id = $1 AND s.ended_at >= $2 AND s.ended_at < $3""",
            tenant_id,
            start,
            end,
        )
        return [
            StepUsageRow(r["cluster"], r["region"], r["price_factor"], r["cpu_seconds"], r["elapsed_seconds"])
            for r in rows
        ]

    async def estimates(self, tenant_id: str, start: datetime, end: datetime) -> list[EstimateRow]:
        """The validator's estimate (workset_validations.estimate, the same one workset.validated carries)
        for every workset of the tenant created in the window."""
        rows = await self._conn.fetch(
            """SELECT w.id, v.estimate FROM worksets w
               LEFT JOIN workset_validations v ON v.workset_id = w.id
               WHERE w.tenant_id = $1 AND w.created_at >= $2 AND w.created_at < $3
               ORDER BY w.id""",
            tenant_id,
            start,
            end,
        )
        out: list[EstimateRow] = []
        for r in rows:
            doc = r["estimate"]
            estimate = json.loads(doc) if isinstance(doc, str) else doc
            median = estimate.get("cost_usd_median") if isinstance(estimate, dict) else None
            out.append(EstimateRow(r["id"], float(median) if isinstance(median, int | float) else None))
        return out
