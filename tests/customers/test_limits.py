"""A tenant's concurrency quota: one operation writes both tenant_limits (what admission enforces) and a
customer's max_concurrent_worksets, with one range for onboarding and `stamen tenant limit`."""

from __future__ import annotations

import asyncpg
import pytest

from stamen.customers import InvalidCustomer, NewCustomer
from stamen.customers.limits import InvalidTenantLimit, set_tenant_limit
from stamen.customers.model import MAX_CONCURRENT_WORKSETS
from stamen.customers.repository import CustomerRepository
from stamen.store.unit_of_work import UnitOfWork


async def test_a_customer_gets_both_and_another_tenant_its_limit_only(pool: asyncpg.Pool) -> None:
    new = NewCustomer.create(
        customer_name="Lab A",
        email="a@lab.example",
        customer_id="lab-a",
        max_concurrent_worksets=2,
        max_storage_gb=1,
    )
    async with pool.acquire() as conn:
        assert await CustomerRepository(conn).insert_onboarding(
            new, s3_bucket="lab-a-bucket", region="us-west-2"
        )
    assert await set_tenant_limit(pool, "lab-a", 7) is True
    assert await set_tenant_limit(pool, "no-customer", 3) is False
    assert await set_tenant_limit(pool, "lab-a", MAX_CONCURRENT_WORKSETS) is True
    async with pool.acquire() as conn:
        customer = await CustomerRepository(conn).get("lab-a")
        assert await CustomerRepository(conn).get("no-customer") is None
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.tenant_limits() == {"lab-a": MAX_CONCURRENT_WORKSETS, "no-customer": 3}
    assert customer is not None and customer.max_concurrent_worksets == MAX_CONCURRENT_WORKSETS


@pytest.mark.parametrize(
    ("tenant", "value", "field"),
    [
        ("lab-a", MAX_CONCURRENT_WORKSETS + 1, "max_concurrent"),
        ("lab-a", -1, "max_concurrent"),
        ("Lab A", 1, "tenant"),
    ],
)
async def test_a_bad_limit_is_refused_before_anything_is_written(
    pool: asyncpg.Pool, tenant: str, value: int, field: str
) -> None:
    with pytest.raises(InvalidTenantLimit) as refused:
        await set_tenant_limit(pool, tenant, value)
    assert refused.value.code == "TENANT_LIMIT_INVALID" and refused.value.details == {"field": field}
    async with UnitOfWork(pool) as uow:
        assert await uow.slots.tenant_limits() == {}


def test_onboarding_has_the_same_range() -> None:
    def create(value: int) -> NewCustomer:
        return NewCustomer.create(
            customer_name="Lab", email="a@lab.example", max_concurrent_worksets=value, max_storage_gb=1
        )

    assert create(MAX_CONCURRENT_WORKSETS).max_concurrent_worksets == MAX_CONCURRENT_WORKSETS
    with pytest.raises(InvalidCustomer, match=f"max_concurrent_worksets must be 0-{MAX_CONCURRENT_WORKSETS}"):
        create(MAX_CONCURRENT_WORKSETS + 1)
