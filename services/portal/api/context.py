"""What the API keeps per application: auth settings, the API key service, the rate limiter, and the AWS
clients (Cognito for tokens and user flows, S3 for storage quotas and usage), opened once per process."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aioboto3  # type: ignore[import-untyped]  # aioboto3 ships no type information
from aiohttp import web

from services.portal.settings import PortalSettings
from stamen.auth import ApiKeyService, AuthSettings, CognitoTokenVerifier, RateLimiter
from stamen.auth import cognito as idp
from stamen.auth.api_keys import require_pepper
from stamen.auth.errors import IdentityProviderError
from stamen.aws_clients import client_config
from stamen.customers.bucket_usage import BucketUsageCache
from stamen.customers.settings import CustomerSettings
from stamen.service.keys import POOL, SETTINGS


@dataclass
class Security:
    """Authentication parts. The Cognito pool is resolved on first use, so a portal whose pool is not
    reachable still serves API keys, health and the local demo."""

    auth: AuthSettings
    portal: PortalSettings
    customers: CustomerSettings
    limiter: RateLimiter
    keys: ApiKeyService | None = None
    cognito: Any = None  # aiobotocore cognito-idp client
    s3: Any = None  # aiobotocore s3 client
    # Measured bucket sizes for the storage quota at submission: a burst of submissions lists a bucket once.
    bucket_usage: BucketUsageCache = field(default_factory=BucketUsageCache)
    _pool: idp.UserPool | None = None
    _verifier: CognitoTokenVerifier | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Tokens signed out through this process (sha256 -> exp), id and access tokens alike: refused at once.
    # Other replicas notice a signed-out access token within the tenant resolver's 60 s cache; an id token
    # is a self-contained JWT, so they accept it until its exp.
    _signed_out: dict[str, float] = field(default_factory=dict)

    def sign_out(self, token: str, exp: float) -> None:
        now = time.time()
        self._signed_out = {k: v for k, v in self._signed_out.items() if v > now}
        self._signed_out[hashlib.sha256(token.encode()).hexdigest()] = exp

    def signed_out(self, token: str) -> bool:
        return hashlib.sha256(token.encode()).hexdigest() in self._signed_out

    async def user_pool(self) -> idp.UserPool:
        async with self._lock:
            if self._pool is None:
                if self.cognito is None:
                    raise IdentityProviderError("Cognito is not configured", aws_code="NotConfigured")
                found = await idp.ensure_user_pool(
                    self.cognito,
                    name=self.auth.cognito_user_pool_name,
                    operator_group=self.auth.cognito_operator_group,
                    create=self.auth.cognito_create_pool,
                    user_pool_id=self.auth.cognito_user_pool_id,
                )
                clients = self.auth.app_client_ids()
                if clients and found.app_client_id not in clients:
                    found = idp.UserPool(found.user_pool_id, sorted(clients)[0], found.region)
                self._pool = found
            return self._pool

    async def verifier(self) -> CognitoTokenVerifier:
        if self._verifier is None:
            pool = await self.user_pool()
            self._verifier = CognitoTokenVerifier.from_settings(
                self.auth,
                user_pool_id=pool.user_pool_id,
                client_ids=set(self.auth.app_client_ids() or {pool.app_client_id}),
                tenant_resolver=idp.CognitoTenantResolver(self.cognito),
                user_check=idp.CognitoUserCheck(
                    self.cognito, pool.user_pool_id, ttl_seconds=self.auth.user_status_cache_seconds
                ),
            )
        return self._verifier


SECURITY = web.AppKey("security", Security)


def add_security(
    app: web.Application,
    auth: AuthSettings | None = None,
    portal: PortalSettings | None = None,
    customers: CustomerSettings | None = None,
) -> None:
    auth = auth or AuthSettings()
    if auth.auth_enabled:
        require_pepper(auth)  # refuse to start: API keys would be hashed with an empty key
    app[SECURITY] = Security(
        auth=auth,
        portal=portal or PortalSettings(),
        customers=customers or CustomerSettings(),
        limiter=RateLimiter(rate_per_second=auth.rate_limit_per_second, burst=auth.rate_limit_burst),
    )
    app.cleanup_ctx.append(_security_ctx)


async def _security_ctx(app: web.Application) -> AsyncIterator[None]:
    security = app[SECURITY]
    settings = app[SETTINGS]
    session = aioboto3.Session()
    async with AsyncExitStack() as stack:
        security.cognito = await stack.enter_async_context(
            session.client(
                "cognito-idp",
                region_name=security.auth.resolved_cognito_region(),
                endpoint_url=security.auth.aws_endpoint_url or settings.aws_endpoint_url,
                config=client_config(),
            )
        )
        security.s3 = await stack.enter_async_context(
            session.client(
                "s3",
                region_name=settings.region,
                endpoint_url=settings.aws_endpoint_url,
                config=client_config(),
            )
        )
        if security.auth.api_key_pepper.get_secret_value().strip():  # local demo without one: no API keys
            security.keys = ApiKeyService(app[POOL], security.auth)
        yield
