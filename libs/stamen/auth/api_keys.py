"""API keys for lab systems: `stm_<prefix>_<secret>`, shown once, stored as HMAC-SHA256(pepper, secret).

The prefix (public, 12 hex characters) finds the row; the secret (32 random bytes, base64url) is compared
in constant time against the stored hash. The secret has 256 bits of entropy, so a fast keyed hash is
enough (slow password hashes exist for low-entropy passwords); the pepper means a database dump alone
cannot even be used to test guesses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from stamen.auth.errors import (
    ApiKeyExpired,
    ApiKeyInvalid,
    ApiKeyNotFound,
    ApiKeyPepperMissing,
    ApiKeyRequestInvalid,
    ApiKeyRevoked,
)
from stamen.auth.names import credential_name
from stamen.auth.principal import CUSTOMER, Principal
from stamen.auth.repository import ApiKeyRecord, ApiKeyRepository
from stamen.auth.settings import AuthSettings
from stamen.domain.workset import InvalidTenantId, check_tenant_id

KEY_PREFIX = "stm"
_KEY_FORMAT = re.compile(r"^stm_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    secret: str


def generate_key(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> tuple[str, ParsedKey]:
    """A new key: (the full text shown to the user once, its parts)."""
    prefix = token_bytes(6).hex()
    secret = base64.urlsafe_b64encode(token_bytes(32)).decode().rstrip("=")
    return f"{KEY_PREFIX}_{prefix}_{secret}", ParsedKey(prefix, secret)


def parse_key(text: str) -> ParsedKey:
    match = _KEY_FORMAT.fullmatch(text.strip())
    if match is None:
        raise ApiKeyInvalid("not a stamen API key")
    return ParsedKey(match.group(1), match.group(2))


def hash_secret(secret: str, pepper: bytes) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(secret: str, stored_hash: str, pepper: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)


@dataclass(frozen=True)
class CreatedApiKey:
    record: ApiKeyRecord
    key: str  # shown once; never stored, never logged


def _now() -> datetime:
    return datetime.now(UTC)


def require_pepper(settings: AuthSettings) -> bytes:
    """The pepper, or ApiKeyPepperMissing: an empty one would make every stored hash testable offline."""
    pepper = settings.api_key_pepper.get_secret_value()
    if not pepper.strip():
        raise ApiKeyPepperMissing(
            "STAMEN_API_KEY_PEPPER is empty: set it to a long random secret (e.g. `openssl rand -base64 32`) and "
            "keep it with the database credentials; `stamen up` makes one for the embedded stack"
        )
    return pepper.encode()


class ApiKeyService:
    """Create, list, revoke and authenticate API keys. Every management call names the tenant."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: AuthSettings | None = None,
        *,
        clock: Callable[[], datetime] = _now,
        touch_granularity_seconds: float = 60.0,
    ) -> None:
        self._pool = pool
        self._settings = settings or AuthSettings()
        self._pepper = require_pepper(self._settings)
        self._clock = clock
        self._touch_granularity = touch_granularity_seconds

    async def create(
        self, customer_id: str, name: str, *, expires_at: datetime | None = None, ttl_days: int | None = None
    ) -> CreatedApiKey:
        try:
            check_tenant_id(customer_id)
        except InvalidTenantId as exc:
            raise ApiKeyRequestInvalid(str(exc), field="customer_id") from None
        try:
            name = credential_name(name)
        except ValueError as exc:
            raise ApiKeyRequestInvalid(str(exc), field="name") from None
        now = self._clock()
        max_expiry = now + timedelta(days=self._settings.api_key_max_ttl_days)
        if expires_at is None:
            expires_at = now + timedelta(days=ttl_days or self._settings.api_key_default_ttl_days)
        if expires_at.tzinfo is None:
            raise ApiKeyRequestInvalid("expires_at needs a time zone", field="expires_at")
        if expires_at <= now or expires_at > max_expiry:
            raise ApiKeyRequestInvalid(
                f"expires_at must be in the future and at most {self._settings.api_key_max_ttl_days} days away",
                field="expires_at",
            )
        text, parsed = generate_key()
        async with self._pool.acquire() as conn:
            repo = ApiKeyRepository(conn)
            try:
                record = await repo.insert(
                    key_id=uuid.uuid4(),
                    customer_id=customer_id,
                    name=name,
                    key_hash=hash_secret(parsed.secret, self._pepper),
                    prefix=parsed.prefix,
                    expires_at=expires_at,
                )
            except asyncpg.ForeignKeyViolationError:
                raise ApiKeyRequestInvalid(
                    f"customer {customer_id} does not exist", field="customer_id"
                ) from None
        if record is None:
            raise ApiKeyRequestInvalid(f"a live key named {name!r} already exists", field="name")
        return CreatedApiKey(record=record, key=text)

    async def list_keys(self, customer_id: str, *, include_revoked: bool = False) -> list[ApiKeyRecord]:
        async with self._pool.acquire() as conn:
            return await ApiKeyRepository(conn).for_customer(customer_id, include_revoked=include_revoked)

    async def revoke(self, customer_id: str, key_id: uuid.UUID | str) -> ApiKeyRecord:
        try:
            kid = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(key_id)
        except ValueError:
            raise ApiKeyNotFound("no such API key") from None
        async with self._pool.acquire() as conn:
            record = await ApiKeyRepository(conn).revoke(customer_id, kid, self._clock())
        if record is None:
            raise ApiKeyNotFound("no such API key")
        return record

    async def authenticate(self, text: str) -> Principal:
        """The principal of a presented key, or ApiKeyInvalid / ApiKeyRevoked / ApiKeyExpired."""
        parsed = parse_key(text)
        async with self._pool.acquire() as conn:
            repo = ApiKeyRepository(conn)
            stored = await repo.by_prefix(parsed.prefix)
            # Compare even when the prefix is unknown so timing does not say which prefixes exist.
            expected = stored.hash if stored else hash_secret("\0", self._pepper)
            if not secret_matches(parsed.secret, expected, self._pepper) or stored is None:
                raise ApiKeyInvalid("not a valid API key")
            record = stored.record
            now = self._clock()
            if record.revoked_at is not None:
                raise ApiKeyRevoked("the API key was revoked", key_id=str(record.id))
            if record.expires_at <= now:
                raise ApiKeyExpired("the API key has expired", key_id=str(record.id))
            if stored.customer_status != "active":
                raise ApiKeyRevoked("the customer of this API key is not active", key_id=str(record.id))
            await repo.touch(record.id, now, granularity_seconds=self._touch_granularity)
        return Principal(
            kind="api_key",
            subject=str(record.id),
            customer_id=record.customer_id,
            roles=frozenset({CUSTOMER}),
            username=record.name,
        )
