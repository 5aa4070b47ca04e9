"""Intake's one-statement read of a tenant (the validator's, the portal's) says what the two repositories
say: its buckets (own first, then its grants, in order) and its customer row, for a customer, a tenant with
grants only, and a stranger."""

from __future__ import annotations

import asyncpg

from stamen.customers import NewCustomer
from stamen.customers.repository import CustomerRepository
from stamen.domain.lifecycle import WorksetState
from stamen.inputs.tenant import read_tenant, tenant_facts, workset_and_tenant
from stamen.intake import submit_workset
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository


async def onboard_acme_and_grant(conn: asyncpg.Connection) -> BucketGrantRepository:
    """Acme: a customer with its own bucket and two grants; lab: a tenant with a grant of its own."""
    new = NewCustomer.create(
        customer_name="Acme", email="ops@acme.example.org", customer_id="acme", max_concurrent_worksets=5,
        max_storage_gb=100,
    )  # fmt: skip
    assert await CustomerRepository(conn).insert_onboarding(new, s3_bucket="acme-own", region="us-west-2")
    grants = BucketGrantRepository(conn)
    await grants.grant("acme", "zeta-shared", "read-only", granted_by="ops", note="refs")
    await grants.grant("acme", "alpha-shared", "read-write", granted_by="ops")
    await grants.grant("lab", "lab-reads", "read-only", granted_by="ops")
    return grants


async def test_a_tenants_facts_in_one_statement_are_the_repositories(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        grants = await onboard_acme_and_grant(conn)
        for tenant in ("acme", "lab", "stranger"):
            facts = await read_tenant(conn, tenant)
            assert facts.tenant_id == tenant
            assert facts.rights == await grants.tenant_buckets(tenant), tenant
            assert facts.customer == await CustomerRepository(conn).get(tenant), tenant
        acme = await read_tenant(conn, "acme")
    assert [r.bucket for r in acme.rights.rights] == ["acme-own", "alpha-shared", "zeta-shared"]
    assert acme.customer is not None and acme.customer.max_storage_gb == 100


async def test_the_validators_read_of_a_workset_brings_its_tenants_facts(pool: asyncpg.Pool) -> None:
    """The validator reads and locks the workset and its tenant's facts in one statement: the same facts."""
    async with pool.acquire() as conn:
        await onboard_acme_and_grant(conn)
    for tenant in ("acme", "lab", "stranger"):
        submitted = await submit_workset(
            pool, tenant_id=tenant, name=f"w-{tenant}", spec={"name": f"w-{tenant}"}, region="us-west-2",
            source="api", actor="test",
        )  # fmt: skip
        async with UnitOfWork(pool) as uow:
            ws, facts = await workset_and_tenant(uow, submitted.workset_id)
            assert (ws.id, ws.tenant_id) == (submitted.workset_id, tenant)
            assert facts == await read_tenant(uow.connection, tenant), tenant
            assert facts.rights == await BucketGrantRepository(uow.connection).tenant_buckets(tenant)
            assert facts.customer == await CustomerRepository(uow.connection).get(tenant)
    assert facts.customer is None and not facts.rights.rights  # the stranger


async def test_a_fresh_connection_submits_and_starts_validation_without_asking_about_types(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """asyncpg asks the server about every type it does not know (a recursive catalog query) once per
    connection: the portal's read of the tenant, the submission, the validator's read and its `validating`
    save must use none (the customer row was a composite, the history and outbox rows int4[], uuid[],
    timestamptz[], jsonb[] arrays), else every new connection of those services pays for it."""
    async with pool.acquire() as conn:
        await onboard_acme_and_grant(conn)
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    fresh = await create_pool(database_url, min_size=1, max_size=1, init=log_queries)
    try:
        facts = await tenant_facts(fresh, "acme")
        assert facts.customer is not None and facts.customer.max_storage_gb == 100
        submitted = await submit_workset(
            fresh, tenant_id="acme", name="w", spec={"name": "w"}, region="us-west-2", source="api",
            actor="test",
        )  # fmt: skip
        async with UnitOfWork(fresh) as uow:
            ws, read = await workset_and_tenant(uow, submitted.workset_id)
            assert read == facts
            ws.transition(WorksetState.VALIDATING, actor="validator", reason="validation started")
            await uow.worksets.save(ws)
            await uow.commit()
    finally:
        await fresh.close()
    assert len(statements) >= 4
    asked = [s for s in statements if "typeinfo" in s or "set_config('jit'" in s]
    assert not asked, asked
