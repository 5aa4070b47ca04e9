"""A running portal on real PostgreSQL, NATS and moto (S3, SNS, Cognito), two onboarded tenants with
resources, and credentials of every kind: Cognito id tokens (customer user, operator) and API keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.portal.api.registry import Target
from services.portal.app import init_app
from services.portal.settings import PortalSettings
from stamen.auth import ApiKeyService, AuthSettings
from stamen.customers import AsyncCustomerManager
from stamen.customers.settings import CustomerSettings
from stamen.domain.lifecycle import WorksetState
from stamen.intake import submit_workset
from stamen.natsauth import NatsCredentialService
from stamen.retry import GiveUpReason
from stamen.store.unit_of_work import UnitOfWork
from tests.auth.cognito_lab import REGION, CognitoLab
from tests.customers.awskit import customer_settings, moto_endpoint
from tests.intake.s3kit import make_intake, make_settings

__all__ = ["moto_endpoint"]
EVENTS_SECRET = "events-secret-for-tests"


@dataclass
class Tenant:
    target: Target
    api_key: str
    id_token: str

    @property
    def id(self) -> str:
        return self.target.tenant


@dataclass
class World:
    client: TestClient[Any, Any]
    a: Tenant
    b: Tenant
    operator_token: str
    lab: CognitoLab
    auth: AuthSettings
    pool: asyncpg.Pool

    def key(self, tenant: Tenant) -> dict[str, str]:
        return {"Authorization": f"Bearer {tenant.api_key}"}

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def operator(self) -> dict[str, str]:
        return self.bearer(self.operator_token)


async def workset_in(pool: asyncpg.Pool, tenant: str, name: str, *, dead_letter: bool = False) -> str:
    result = await submit_workset(
        pool,
        tenant_id=tenant,
        name=name,
        spec={"name": name, "tenant": tenant},
        region="us-west-2",
        source="api",
        actor="test",
    )
    if dead_letter:
        s = WorksetState
        async with UnitOfWork(pool) as uow:
            ws = await uow.worksets.get(result.workset_id, for_update=True)
            for state in (s.VALIDATING, s.QUEUED, s.SCHEDULED, s.RUNNING, s.FAILED, s.DEAD_LETTERED):
                ws.transition(state, actor="test", reason="test fixture")
            await uow.worksets.save(ws)
            await uow.dead_letters.park(
                ws.id, tenant, GiveUpReason.RETRIES_EXHAUSTED, 3, "TEST", "the retry budget of 2 is used up"
            )
            await uow.commit()
    return result.workset_id


def settings_for(
    lab: CognitoLab, moto: str, database_url: str, **auth: Any
) -> tuple[AuthSettings, CustomerSettings]:
    auth_settings = lab.settings(
        api_key_pepper="test-pepper", rate_limit_burst=10_000, rate_limit_per_second=1000.0, **auth
    )
    customers = customer_settings(
        moto,
        database_url,
        cognito_user_pool_id=lab.pool.user_pool_id,
        cognito_region=REGION,
        cognito_create_pool=False,
    )
    return auth_settings, customers


async def onboard(
    pool: asyncpg.Pool, customers: CustomerSettings, keys: ApiKeyService, lab: CognitoLab, name: str
) -> Tenant:
    tenant = f"{name}-{uuid.uuid4().hex[:6]}"
    await AsyncCustomerManager(pool, customers).onboard_customer(
        customer_name=f"{name} labs",
        email=f"admin@{tenant}.example",
        customer_id=tenant,
        admin_temporary_password="Temp-Pass-12345",
    )
    key = await keys.create(tenant, "lims", ttl_days=30)
    probe = await keys.create(tenant, "probe", ttl_days=30)  # the one the isolation test may revoke
    workset = await workset_in(pool, tenant, f"{name}-ws")
    dead = await workset_in(pool, tenant, f"{name}-dead", dead_letter=True)
    _, tokens = await lab.user(tenant)
    nats_probe = await NatsCredentialService(pool).create(tenant, "probe")
    target = Target(
        tenant=tenant,
        workset_id=workset,
        dead_letter_id=dead,
        api_key_id=str(probe.record.id),
        nats_credential_id=str(nats_probe.record.id),
    )
    return Tenant(target=target, api_key=key.key, id_token=tokens.id_token)


async def start(
    app_settings: Any,
    intake: Any,
    auth: AuthSettings,
    customers: CustomerSettings,
) -> TestClient[Any, Any]:
    app = init_app(
        app_settings,
        intake=intake,
        auth=auth,
        customers=customers,
        portal=PortalSettings(s3_events_secret=EVENTS_SECRET),
    )  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def world(
    database_url: str, nats_url: str, moto_endpoint: str, pool: asyncpg.Pool
) -> AsyncIterator[World]:
    lab = await CognitoLab.create(moto_endpoint)
    auth, customers = settings_for(lab, moto_endpoint, database_url)
    keys = ApiKeyService(pool, auth)
    a = await onboard(pool, customers, keys, lab, "tenant-a")
    b = await onboard(pool, customers, keys, lab, "tenant-b")
    _, op_tokens = await lab.user(None, operator=True)
    client = await start(make_settings(database_url, nats_url, moto_endpoint), make_intake(), auth, customers)
    try:
        yield World(client, a, b, op_tokens.id_token, lab, auth, pool)
    finally:
        await client.close()
