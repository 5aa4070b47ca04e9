"""Setting a tenant's concurrency quota (`stamen tenant limit`): one operation for both places it lives.

Admission enforces `tenant_limits`; a customer's `max_concurrent_worksets` is what the portal and
`stamen customer` show. Both are written in one transaction by CustomerRepository.set_tenant_limit, so
they cannot disagree. A tenant that is not a customer (local demo, the drop default tenant) gets its
`tenant_limits` row all the same.
"""

from __future__ import annotations

import asyncpg

from stamen.customers.model import MAX_CONCURRENT_WORKSETS, CustomerError, concurrency_in_range
from stamen.customers.repository import CustomerRepository
from stamen.domain.workset import InvalidTenantId, check_tenant_id
from stamen.store.unit_of_work import UnitOfWork


class InvalidTenantLimit(CustomerError):
    code = "TENANT_LIMIT_INVALID"


def check_tenant_limit(tenant_id: str, max_concurrent: int) -> None:
    """Raise InvalidTenantLimit for a value out of range or a tenant id that is not one."""
    if not concurrency_in_range(max_concurrent):
        raise InvalidTenantLimit(
            f"max_concurrent must be 0-{MAX_CONCURRENT_WORKSETS}, not {max_concurrent}",
            field="max_concurrent",
        )
    try:
        check_tenant_id(tenant_id)
    except InvalidTenantId as exc:
        raise InvalidTenantLimit(str(exc), field="tenant") from None


async def set_tenant_limit(pool: asyncpg.Pool, tenant_id: str, max_concurrent: int) -> bool:
    """Set how many worksets `tenant_id` may run at once. True when it is a customer (its quota was
    updated too). Raises InvalidTenantLimit before anything is written."""
    check_tenant_limit(tenant_id, max_concurrent)
    async with UnitOfWork(pool) as uow:
        customer = await CustomerRepository(uow.connection).set_tenant_limit(tenant_id, max_concurrent)
        await uow.commit()
    return customer
