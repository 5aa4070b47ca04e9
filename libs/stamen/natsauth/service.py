"""Create, list and revoke tenant NATS credentials; render what nats-server must allow."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from stamen.auth.names import credential_name
from stamen.domain.workset import InvalidTenantId, check_tenant_id
from stamen.natsauth.authorization import ServiceUser, render_authorization
from stamen.natsauth.errors import NatsCredentialNotFound, NatsCredentialRequestInvalid
from stamen.natsauth.keys import generate_user_key
from stamen.natsauth.repository import NatsCredentialRecord, NatsCredentialRepository


@dataclass(frozen=True)
class CreatedNatsCredential:
    record: NatsCredentialRecord
    seed: str  # shown once; never stored, never logged


def _now() -> datetime:
    return datetime.now(UTC)


class NatsCredentialService:
    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], datetime] = _now) -> None:
        self._pool = pool
        self._clock = clock

    async def create(self, customer_id: str, name: str) -> CreatedNatsCredential:
        try:
            check_tenant_id(customer_id)
        except InvalidTenantId as exc:
            raise NatsCredentialRequestInvalid(str(exc), field="customer_id") from None
        try:
            name = credential_name(name)
        except ValueError as exc:
            raise NatsCredentialRequestInvalid(str(exc), field="name") from None
        seed, public_key = generate_user_key()
        async with self._pool.acquire() as conn:
            try:
                record = await NatsCredentialRepository(conn).insert(
                    credential_id=uuid.uuid4(), customer_id=customer_id, name=name, public_key=public_key
                )
            except asyncpg.ForeignKeyViolationError:
                raise NatsCredentialRequestInvalid(
                    f"customer {customer_id} does not exist", field="customer_id"
                ) from None
        if record is None:
            raise NatsCredentialRequestInvalid(
                f"a live NATS credential named {name!r} already exists", field="name"
            )
        return CreatedNatsCredential(record=record, seed=seed)

    async def list_credentials(
        self, customer_id: str, *, include_revoked: bool = False
    ) -> list[NatsCredentialRecord]:
        async with self._pool.acquire() as conn:
            return await NatsCredentialRepository(conn).for_customer(
                customer_id, include_revoked=include_revoked
            )

    async def revoke(self, customer_id: str, credential_id: uuid.UUID | str) -> NatsCredentialRecord:
        try:
            cid = credential_id if isinstance(credential_id, uuid.UUID) else uuid.UUID(credential_id)
        except ValueError:
            raise NatsCredentialNotFound("no such NATS credential") from None
        async with self._pool.acquire() as conn:
            record = await NatsCredentialRepository(conn).revoke(customer_id, cid, self._clock())
        if record is None:
            raise NatsCredentialNotFound("no such NATS credential")
        return record

    async def render(self, service: ServiceUser) -> str:
        async with self._pool.acquire() as conn:
            keys = await NatsCredentialRepository(conn).allowed_keys()
        return render_authorization(service, keys)
