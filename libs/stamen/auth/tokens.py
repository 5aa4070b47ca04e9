"""Verify Cognito JWTs for real: RS256 signature against the pool's JWKS, then iss, exp, token_use, client
id and the tenant claim. Built on PyJWT; every rejection is an `AuthError` with a stable code.

The JWKS is fetched over HTTP and cached; an unknown `kid` triggers one refresh (key rotation), but not
more often than `min_refresh_interval`, so a stream of tokens with made-up kids cannot hammer Cognito.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import jwt

from stamen.auth.errors import (
    BadSignature,
    JwksUnavailable,
    TenantClaimInvalid,
    TenantClaimMissing,
    TokenAlgorithmNotAllowed,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    UnknownSigningKey,
    WrongAudience,
    WrongIssuer,
    WrongTokenUse,
)
from stamen.auth.principal import CUSTOMER, OPERATOR, Principal
from stamen.auth.settings import AuthSettings
from stamen.domain.workset import TENANT_ID_PATTERN

ALLOWED_ALGORITHMS = ("RS256",)
TENANT_CLAIM = "custom:customer_id"
GROUPS_CLAIM = "cognito:groups"

FetchJson = Callable[[str], Awaitable[Mapping[str, Any]]]


def cognito_issuer(region: str, user_pool_id: str) -> str:
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def jwks_url_for(region: str, user_pool_id: str, endpoint_url: str | None = None) -> str:
    """Real Cognito serves the JWKS under the issuer; moto's server under `<endpoint>/<pool>/...`."""
    base = endpoint_url.rstrip("/") if endpoint_url else cognito_issuer(region, user_pool_id)
    if endpoint_url:
        base = f"{base}/{user_pool_id}"
    return f"{base}/.well-known/jwks.json"


def http_json_fetcher(timeout_seconds: float = 5.0) -> FetchJson:
    async def fetch(url: str) -> Mapping[str, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            response.raise_for_status()
            doc = await response.json(content_type=None)
        if not isinstance(doc, dict):
            raise ValueError("JWKS document is not a JSON object")
        return doc

    return fetch


class JwksCache:
    # While no key set was ever loaded (Cognito unreachable at start), retry at most this often.
    RETRY_WITHOUT_KEYS_SECONDS = 1.0

    def __init__(
        self,
        url: str,
        *,
        fetch: FetchJson | None = None,
        max_age_seconds: float = 3600.0,
        min_refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._fetch = fetch or http_json_fetcher()
        self._max_age = max_age_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None  # last successful download
        self._attempted_at: float | None = None  # last download attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the JWKS was requested (metrics, tests)

    async def _refresh(self, seen_attempt: float | None) -> None:
        async with self._lock:
            if self._attempted_at != seen_attempt:
                return  # another coroutine refreshed while this one waited for the lock
            self.fetches += 1
            self._attempted_at = self._clock()
            try:
                doc = await self._fetch(self.url)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if self._keys:
                    return  # keep serving the keys we have; Cognito rotates keys rarely
                raise JwksUnavailable(f"could not fetch the JWKS from {self.url}: {exc}") from None
            entries = doc.get("keys")
            keys: dict[str, jwt.PyJWK] = {}
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                    continue
                try:
                    keys[str(entry["kid"])] = jwt.PyJWK(entry)
                except jwt.PyJWKError:
                    continue  # a key type or algorithm we do not use
            if not keys and self._keys:
                return  # an empty answer never replaces working keys
            self._keys = keys
            self._loaded_at = self._attempted_at

    async def key(self, kid: str) -> jwt.PyJWK:
        now = self._clock()
        if self._loaded_at is None:
            if self._attempted_at is not None and now - self._attempted_at < self.RETRY_WITHOUT_KEYS_SECONDS:
                raise JwksUnavailable(f"the JWKS from {self.url} is not available yet")
            await self._refresh(self._attempted_at)
        elif now - self._loaded_at >= self._max_age:
            await self._refresh(self._attempted_at)
        found = self._keys.get(kid)
        if found is not None:
            return found
        # Unknown kid: the pool may have rotated its keys. Refresh once, but not more often than allowed.
        assert self._attempted_at is not None
        if self._clock() - self._attempted_at >= self._min_refresh:
            await self._refresh(self._attempted_at)
            found = self._keys.get(kid)
            if found is not None:
                return found
        raise UnknownSigningKey(f"signing key {kid!r} is not in the user pool's JWKS", kid=kid)


class TenantResolver(Protocol):
    """Finds the tenant of a verified token that does not carry `custom:customer_id` (Cognito access
    tokens do not carry custom attributes). See `stamen.auth.cognito.CognitoTenantResolver`."""

    async def __call__(self, token: str, claims: Mapping[str, Any]) -> str | None: ...


class UserCheck(Protocol):
    """Raises an AuthError when the user named in a verified token may no longer act (disabled, deleted).
    See `stamen.auth.cognito.CognitoUserCheck`."""

    async def __call__(self, username: str) -> None: ...


class CognitoTokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        client_ids: frozenset[str] | set[str],
        jwks: JwksCache,
        token_uses: frozenset[str] = frozenset({"id", "access"}),
        operator_group: str = "operators",
        leeway_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
        tenant_resolver: TenantResolver | None = None,
        user_check: UserCheck | None = None,
    ) -> None:
        if not client_ids:
            raise ValueError("at least one Cognito app client id is required")
        self.issuer = issuer
        self.client_ids = frozenset(client_ids)
        self.jwks = jwks
        self.token_uses = token_uses
        self.operator_group = operator_group
        self.leeway = leeway_seconds
        self._clock = clock
        self._tenant_resolver = tenant_resolver
        self._user_check = user_check

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        *,
        user_pool_id: str | None = None,
        client_ids: set[str] | None = None,
        tenant_resolver: TenantResolver | None = None,
        user_check: UserCheck | None = None,
        fetch: FetchJson | None = None,
    ) -> CognitoTokenVerifier:
        pool = user_pool_id or settings.cognito_user_pool_id
        if not pool:
            raise ValueError("STAMEN_COGNITO_USER_POOL_ID is not set")
        region = settings.resolved_cognito_region()
        url = settings.cognito_jwks_url or jwks_url_for(region, pool, settings.aws_endpoint_url)
        return cls(
            issuer=settings.cognito_issuer or cognito_issuer(region, pool),
            client_ids=frozenset(client_ids) if client_ids else settings.app_client_ids(),
            jwks=JwksCache(
                url,
                fetch=fetch or http_json_fetcher(settings.jwks_timeout_seconds),
                max_age_seconds=settings.jwks_cache_seconds,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
            ),
            token_uses=settings.accepted_token_uses(),
            operator_group=settings.cognito_operator_group,
            leeway_seconds=settings.token_leeway_seconds,
            tenant_resolver=tenant_resolver,
            user_check=user_check,
        )

    async def verify(self, token: str) -> Principal:
        claims = await self.verified_claims(token)
        principal = await self.principal(token, claims)
        if self._user_check is not None:  # id and access tokens alike, operators included
            if not principal.username:
                raise TokenMalformed("the token names no user (cognito:username / username)")
            await self._user_check(principal.username)
        return principal

    async def verified_claims(self, token: str) -> dict[str, Any]:
        token = token.strip() if token else ""
        if not token:
            raise TokenMissing("no bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenMalformed("the token is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenAlgorithmNotAllowed(
                f"token algorithm {alg!r} is not accepted; RS256 only", alg=str(alg)
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenMalformed("the token header has no key id (kid)")
        key = await self.jwks.key(kid)
        try:
            # Time claims are checked below against our (injectable) clock; the signature here.
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(ALLOWED_ALGORITHMS),
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise BadSignature("the token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenMalformed(f"the token cannot be decoded: {exc}") from None
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenMalformed("the token has no numeric exp claim")
        if now > exp + self.leeway:
            raise TokenExpired("the token has expired", expired_at=int(exp))
        for claim in ("nbf", "iat"):
            value = claims.get(claim)
            if value is not None and (not isinstance(value, int | float) or now + self.leeway < value):
                raise TokenNotYetValid(f"the token's {claim} is in the future")
        if claims.get("iss") != self.issuer:
            raise WrongIssuer("the token was issued by another user pool")
        use = claims.get("token_use")
        if use not in self.token_uses:
            raise WrongTokenUse(f"token_use {use!r} is not accepted", accepted=sorted(self.token_uses))
        client = claims.get("aud") if use == "id" else claims.get("client_id")
        if isinstance(client, list):  # `aud` may be a list in general JWTs; Cognito uses a string
            ok = any(c in self.client_ids for c in client)
        else:
            ok = client in self.client_ids
        if not ok:
            raise WrongAudience("the token is for another app client")
        if not isinstance(claims.get("sub"), str):
            raise TokenMalformed("the token has no sub claim")

    async def principal(self, token: str, claims: Mapping[str, Any]) -> Principal:
        groups_claim = claims.get(GROUPS_CLAIM) or []
        groups = (
            frozenset(g for g in groups_claim if isinstance(g, str))
            if isinstance(groups_claim, list)
            else frozenset()
        )
        username = claims.get("cognito:username") or claims.get("username")
        username = username if isinstance(username, str) else None
        tenant = claims.get(TENANT_CLAIM)
        if tenant is None and self.operator_group not in groups and self._tenant_resolver is not None:
            tenant = await self._tenant_resolver(token, claims)
        if tenant is not None and (not isinstance(tenant, str) or not TENANT_ID_PATTERN.fullmatch(tenant)):
            raise TenantClaimInvalid(f"{TENANT_CLAIM} is not a valid tenant id")
        if self.operator_group in groups:
            return Principal("operator", str(claims["sub"]), tenant, groups | {OPERATOR}, username)
        if tenant is None:
            raise TenantClaimMissing(f"the token has no {TENANT_CLAIM} and the user is not an operator")
        return Principal("customer_user", str(claims["sub"]), tenant, groups | {CUSTOMER}, username)
