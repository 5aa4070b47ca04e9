"""API keys on real PostgreSQL: shown once, stored hashed, scoped to the tenant, revocable, expiring."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stamen.auth.api_keys import ApiKeyService, generate_key, hash_secret, parse_key, secret_matches
from stamen.auth.errors import (
    ApiKeyExpired,
    ApiKeyInvalid,
    ApiKeyNotFound,
    ApiKeyRequestInvalid,
    ApiKeyRevoked,
)
from stamen.auth.settings import AuthSettings
from stamen.customers.model import NewCustomer
from stamen.customers.repository import CustomerRepository

SETTINGS = AuthSettings(api_key_pepper="pepper-for-tests")  # type: ignore[arg-type]


async def customer(pool: asyncpg.Pool, cid: str, status: str = "active") -> None:
    new = NewCustomer.create(
        customer_name=cid,
        customer_id=cid,
        email=f"a@{cid}.example",
        max_concurrent_worksets=1,
        max_storage_gb=1,
    )
    async with pool.acquire() as conn:
        repo = CustomerRepository(conn)
        await repo.insert_onboarding(new, s3_bucket=f"bucket-{cid}", region="us-west-2")
        await repo.set_status(cid, status)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_key_format_round_trips() -> None:
    text, parts = generate_key()
    assert text.startswith("stm_") and parse_key(text) == parts
    for bad in ("", "stm_abc_def", text + "x", text.replace("stm_", "sk_"), text.upper()):
        with pytest.raises(ApiKeyInvalid):
            parse_key(bad)


@given(st.binary(min_size=1, max_size=64), st.text(min_size=1, max_size=64))
def test_hash_depends_on_pepper_and_secret(pepper: bytes, secret: str) -> None:
    stored = hash_secret(secret, pepper)
    assert secret_matches(secret, stored, pepper)
    assert not secret_matches(secret + "x", stored, pepper)
    assert not secret_matches(secret, stored, pepper + b"x")


async def test_create_authenticate_and_list(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    service = ApiKeyService(pool, SETTINGS)
    created = await service.create("acme", "sequencer-1", ttl_days=30)
    principal = await service.authenticate(created.key)
    assert principal.kind == "api_key" and principal.customer_id == "acme"
    assert principal.subject == str(created.record.id) and principal.can_access("acme")
    assert not principal.can_access("beta") and not principal.is_operator
    [listed] = await service.list_keys("acme")
    assert listed.id == created.record.id and listed.name == "sequencer-1"
    assert listed.last_used_at is not None
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys")
    assert row is not None
    secret = parse_key(created.key).secret
    assert secret not in str(dict(row)) and created.key not in str(dict(row))  # only the hash is stored
    assert row["hash"] == hash_secret(secret, b"pepper-for-tests")


async def test_wrong_secret_unknown_prefix_and_other_pepper_are_invalid(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    service = ApiKeyService(pool, SETTINGS)
    created = await service.create("acme", "k")
    parts = parse_key(created.key)
    flipped = parts.secret[:-1] + ("A" if parts.secret[-1] != "A" else "B")
    for text in (f"stm_{parts.prefix}_{flipped}", f"stm_{'0' * 12}_{parts.secret}"):
        with pytest.raises(ApiKeyInvalid) as err:
            await service.authenticate(text)
        assert err.value.code == "API_KEY_INVALID"
    other_pepper = ApiKeyService(pool, AuthSettings(api_key_pepper="another"))  # type: ignore[arg-type]
    with pytest.raises(ApiKeyInvalid):
        await other_pepper.authenticate(created.key)


async def test_a_revoked_key_is_rejected(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    service = ApiKeyService(pool, SETTINGS)
    created = await service.create("acme", "lims")
    revoked = await service.revoke("acme", created.record.id)
    assert revoked.revoked_at is not None
    with pytest.raises(ApiKeyRevoked) as err:
        await service.authenticate(created.key)
    assert err.value.code == "API_KEY_REVOKED" and err.value.http_status == 401
    again = await service.revoke("acme", str(created.record.id))  # idempotent
    assert again.revoked_at == revoked.revoked_at
    assert await service.list_keys("acme") == []
    assert len(await service.list_keys("acme", include_revoked=True)) == 1
    replacement = await service.create("acme", "lims")  # the name is free again
    assert (await service.authenticate(replacement.key)).customer_id == "acme"


async def test_an_expired_key_is_rejected(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    clock = Clock()
    service = ApiKeyService(pool, SETTINGS, clock=clock)
    created = await service.create("acme", "short", expires_at=clock.now + timedelta(hours=1))
    clock.now += timedelta(minutes=59)
    assert (await service.authenticate(created.key)).customer_id == "acme"
    clock.now += timedelta(minutes=2)
    with pytest.raises(ApiKeyExpired) as err:
        await service.authenticate(created.key)
    assert err.value.code == "API_KEY_EXPIRED"


async def test_keys_are_scoped_to_their_tenant(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    await customer(pool, "beta")
    service = ApiKeyService(pool, SETTINGS)
    acme_key = await service.create("acme", "shared-name")
    beta_key = await service.create("beta", "shared-name")  # names are per tenant
    with pytest.raises(ApiKeyNotFound) as err:
        await service.revoke("beta", acme_key.record.id)  # beta cannot touch (or see) acme's key
    assert err.value.http_status == 404
    assert (await service.authenticate(acme_key.key)).customer_id == "acme"
    assert [k.id for k in await service.list_keys("beta")] == [beta_key.record.id]
    with pytest.raises(ApiKeyNotFound):
        await service.revoke("acme", uuid.uuid4())
    with pytest.raises(ApiKeyNotFound):
        await service.revoke("acme", "not-a-uuid")


async def test_requests_are_checked(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    clock = Clock()
    service = ApiKeyService(pool, SETTINGS, clock=clock)
    await service.create("acme", "dup")
    cases = [
        dict(customer_id="acme", name="dup"),
        dict(customer_id="acme", name=""),
        dict(customer_id="acme", name="x", expires_at=clock.now - timedelta(seconds=1)),
        dict(customer_id="acme", name="x", expires_at=clock.now + timedelta(days=366)),
        dict(customer_id="acme", name="x", expires_at=datetime(2030, 2, 1)),  # naive
        dict(customer_id="ghost", name="x"),
        dict(customer_id="Bad Tenant", name="x"),
    ]
    for case in cases:
        with pytest.raises(ApiKeyRequestInvalid) as err:
            await service.create(**case)  # type: ignore[arg-type]
        assert err.value.code == "API_KEY_REQUEST_INVALID", case


async def test_keys_of_a_suspended_customer_stop_working(pool: asyncpg.Pool) -> None:
    await customer(pool, "acme")
    service = ApiKeyService(pool, SETTINGS)
    created = await service.create("acme", "k")
    async with pool.acquire() as conn:
        await CustomerRepository(conn).set_status("acme", "suspended")
    with pytest.raises(ApiKeyRevoked):
        await service.authenticate(created.key)
