"""Where the owners' channel secrets live: AWS Secrets Manager, or read-only settings.

Names: `stamen/notify/<owner>/linear-api-key` and `stamen/notify/<owner>/webhook-secret` (owner: a
customer id or `@operators`). Values are never logged, never returned by the API; the notifier reads
them when it sends, through a short cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aioboto3  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError

from stamen.aws_clients import client_config
from stamen.notifications.errors import SecretStoreReadOnly, SecretStoreUnavailable
from stamen.notifications.settings import NotifySettings

LINEAR_API_KEY = "linear-api-key"
WEBHOOK_SECRET = "webhook-secret"


def secret_name(owner: str, what: str) -> str:
    return f"stamen/notify/{owner}/{what}"


class SecretStore(Protocol):
    async def get(self, name: str) -> str | None: ...

    async def put(self, name: str, value: str) -> None: ...


class StaticSecrets:
    """Secrets given in settings (STAMEN_NOTIFY_SECRETS): read-only."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    async def get(self, name: str) -> str | None:
        return self._values.get(name)

    async def put(self, name: str, value: str) -> None:
        raise SecretStoreReadOnly(
            "secrets come from STAMEN_NOTIFY_SECRETS (secret store `settings`): set "
            f"{name!r} there, or use STAMEN_NOTIFY_SECRET_STORE=aws",
            secret=name,
        )


class AwsSecrets:
    """AWS Secrets Manager through an open aiobotocore client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def get(self, name: str) -> str | None:
        try:
            answer = await self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise SecretStoreUnavailable(f"Secrets Manager refused to read {name}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise SecretStoreUnavailable(f"Secrets Manager is unreachable: {type(exc).__name__}") from None
        value = answer.get("SecretString")
        return str(value) if value is not None else None

    async def put(self, name: str, value: str) -> None:
        try:
            try:
                await self._client.put_secret_value(SecretId=name, SecretString=value)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                await self._client.create_secret(Name=name, SecretString=value)
        except ClientError as exc:
            raise SecretStoreUnavailable(f"Secrets Manager refused to store {name}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise SecretStoreUnavailable(f"Secrets Manager is unreachable: {type(exc).__name__}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


class CachedSecrets:
    """Reads through a cache (the notifier reads a secret per send); a write updates the cache."""

    def __init__(self, inner: SecretStore, ttl_seconds: float) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def get(self, name: str) -> str | None:
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        value = await self._inner.get(name)
        self._cache[name] = (time.monotonic(), value)
        return value

    async def put(self, name: str, value: str) -> None:
        await self._inner.put(name, value)
        self._cache[name] = (time.monotonic(), value)


@asynccontextmanager
async def open_secret_store(settings: NotifySettings) -> AsyncIterator[SecretStore]:
    if settings.secret_store == "settings":
        yield CachedSecrets(StaticSecrets(settings.static_secrets()), settings.secret_cache_seconds)
        return
    session = aioboto3.Session()
    async with session.client(
        "secretsmanager",
        region_name=settings.aws_region,
        endpoint_url=settings.aws_endpoint_url,
        config=client_config(),
    ) as client:
        yield CachedSecrets(AwsSecrets(client), settings.secret_cache_seconds)
