"""Cognito token verification against tokens moto's server issues and the JWKS it serves over HTTP."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from stamen.auth import cognito
from stamen.auth.errors import (
    AuthError,
    BadSignature,
    JwksUnavailable,
    TenantClaimInvalid,
    TenantClaimMissing,
    TokenAlgorithmNotAllowed,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    UnknownSigningKey,
    WrongAudience,
    WrongIssuer,
    WrongTokenUse,
)
from stamen.auth.tokens import CognitoTokenVerifier, JwksCache, jwks_url_for
from tests.auth.cognito_lab import REGION, CognitoLab, moto_signing_key, now, resign


@pytest.fixture
async def lab(moto_endpoint: str) -> CognitoLab:
    return await CognitoLab.create(moto_endpoint)


def own_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def rejected(verifier: CognitoTokenVerifier, token: str, expected: type[AuthError]) -> str:
    with pytest.raises(AuthError) as err:
        await verifier.verify(token)
    assert type(err.value) is expected, f"{type(err.value).__name__}: {err.value}"
    assert err.value.http_status == 401
    assert not token or token not in str(err.value)
    return err.value.code


async def test_a_valid_moto_id_token_gives_the_customer_principal(lab: CognitoLab) -> None:
    _, tokens = await lab.user("acme")
    principal = await lab.verifier().verify(tokens.id_token)
    claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
    assert principal.kind == "customer_user" and principal.customer_id == "acme"
    assert principal.subject == claims["sub"] and "customer" in principal.roles
    assert principal.can_access("acme") and not principal.can_access("other")
    assert principal.visible_tenant() == "acme"


async def test_access_tokens_get_their_tenant_from_cognito(lab: CognitoLab) -> None:
    _, tokens = await lab.user("acme")
    await rejected(
        lab.verifier(), tokens.access_token, TenantClaimMissing
    )  # access tokens carry no custom attrs
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        verifier = CognitoTokenVerifier.from_settings(
            lab.settings(), tenant_resolver=cognito.CognitoTenantResolver(client)
        )
        principal = await verifier.verify(tokens.access_token)
    assert principal.kind == "customer_user" and principal.customer_id == "acme"


async def test_operators_are_members_of_the_operators_group(lab: CognitoLab) -> None:
    _, tokens = await lab.user(None, operator=True)
    for token in (tokens.id_token, tokens.access_token):
        principal = await lab.verifier().verify(token)
        assert principal.kind == "operator" and principal.customer_id is None
        assert (
            principal.can_access("acme")
            and principal.can_access("beta")
            and principal.visible_tenant() is None
        )


async def test_a_user_without_tenant_and_not_operator_is_rejected(lab: CognitoLab) -> None:
    _, tokens = await lab.user(None)
    assert await rejected(lab.verifier(), tokens.id_token, TenantClaimMissing) == "AUTH_TENANT_CLAIM_MISSING"


async def test_every_forgery_is_rejected_with_its_own_code(lab: CognitoLab, moto_endpoint: str) -> None:
    _, tokens = await lab.user("acme")
    verifier = lab.verifier()
    moto_key = moto_signing_key()
    codes: dict[str, str] = {}

    # Signature: same claims re-signed with another key under moto's kid; and claims edited after signing.
    codes["forged"] = await rejected(verifier, resign(tokens.id_token, own_key()), BadSignature)
    header, payload, signature = tokens.id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["custom:customer_id"] = "victim"
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert await rejected(verifier, f"{header}.{tampered}.{signature}", BadSignature) == codes["forged"]

    # Expired: a real token checked two hours later, and one signed by moto's key with exp in the past.
    later = lab.verifier()
    later._clock = lambda: now() + 7200  # type: ignore[method-assign]
    codes["expired"] = await rejected(later, tokens.id_token, TokenExpired)
    await rejected(
        verifier, resign(tokens.id_token, moto_key, exp=now() - 3600, iat=now() - 7200), TokenExpired
    )

    # alg none, and HS256 keyed with the public key (the classic algorithm-confusion attack).
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "dummy"})
    codes["alg_none"] = await rejected(verifier, unsigned, TokenAlgorithmNotAllowed)
    public_pem = moto_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs = base64.urlsafe_b64encode(public_pem).decode()
    confused = jwt.encode(claims, hs, algorithm="HS256", headers={"kid": "dummy"})
    assert await rejected(verifier, confused, TokenAlgorithmNotAllowed) == codes["alg_none"]

    # Wrong issuer: a real token of another pool on the same server (moto signs both with one key).
    other_pool = await CognitoLab.create(moto_endpoint)
    _, foreign = await other_pool.user("acme")
    verifier_for_both_clients = lab.verifier(
        cognito_app_client_ids=f"{lab.pool.app_client_id},{other_pool.pool.app_client_id}"
    )
    codes["wrong_issuer"] = await rejected(verifier_for_both_clients, foreign.id_token, WrongIssuer)

    # Wrong audience: a real token of another app client of the same pool (id: aud, access: client_id).
    second = lab.boto.create_user_pool_client(
        UserPoolId=lab.pool.user_pool_id,
        ClientName="other-app",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"],
    )
    email, _ = await lab.user("acme")
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        other_tokens = await cognito.login(
            client,
            app_client_id=second["UserPoolClient"]["ClientId"],
            username=email,
            password="Correct-Horse-9-Battery",
        )
    codes["wrong_audience"] = await rejected(verifier, other_tokens.id_token, WrongAudience)
    await rejected(verifier, other_tokens.access_token, WrongAudience)

    # Unknown kid: signed by a key the pool never published.
    codes["unknown_kid"] = await rejected(
        verifier, resign(tokens.id_token, own_key(), headers={"kid": "not-in-jwks"}), UnknownSigningKey
    )
    # Token use: a verifier accepting id tokens only, given an access token.
    codes["wrong_use"] = await rejected(lab.verifier(token_uses="id"), tokens.access_token, WrongTokenUse)
    codes["malformed"] = await rejected(verifier, "not.a.jwt", TokenMalformed)
    codes["missing"] = await rejected(verifier, "", TokenMissing)
    codes["bad_tenant"] = await rejected(
        verifier,
        resign(tokens.id_token, moto_key, **{"custom:customer_id": "Not A Tenant!"}),
        TenantClaimInvalid,
    )
    assert len(set(codes.values())) == len(codes), codes  # each failure has its own stable code

    # And the untouched token still verifies: the rejections above were about the changes, not the setup.
    assert (await verifier.verify(tokens.id_token)).customer_id == "acme"


async def test_jwks_is_cached_and_refreshed_once_per_unknown_kid(lab: CognitoLab) -> None:
    _, tokens = await lab.user("acme")
    ticks = [1000.0]
    jwks = JwksCache(
        jwks_url_for(REGION, lab.pool.user_pool_id, lab.endpoint),
        min_refresh_seconds=60,
        clock=lambda: ticks[0],
    )
    verifier = CognitoTokenVerifier(issuer=lab.issuer, client_ids={lab.pool.app_client_id}, jwks=jwks)
    for _ in range(3):
        await verifier.verify(tokens.id_token)
    assert jwks.fetches == 1  # cached
    stranger = resign(tokens.id_token, own_key(), headers={"kid": "rotated?"})
    await rejected(verifier, stranger, UnknownSigningKey)
    assert jwks.fetches == 1  # fetched less than 60 s ago: no refresh
    ticks[0] += 61
    await rejected(verifier, stranger, UnknownSigningKey)
    assert jwks.fetches == 2  # one refresh, still unknown
    await rejected(verifier, stranger, UnknownSigningKey)
    assert jwks.fetches == 2


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server whose JWKS the test changes, to rotate keys."""
    document: dict[str, Any] = {"keys": []}

    async def serve(_: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/jwks.json", document
    finally:
        await runner.cleanup()


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**doc, "kid": kid, "alg": "RS256", "use": "sig"}


async def test_a_rotated_key_is_picked_up_after_one_refresh(jwks_server: tuple[str, dict[str, Any]]) -> None:
    url, document = jwks_server
    old, new = own_key(), own_key()
    document["keys"] = [public_jwk(old, "k1")]
    verifier = CognitoTokenVerifier(
        issuer="https://issuer.example/pool", client_ids={"app"}, jwks=JwksCache(url, min_refresh_seconds=0)
    )

    def token(key: rsa.RSAPrivateKey, kid: str) -> str:
        claims = {
            "iss": "https://issuer.example/pool",
            "sub": "u1",
            "aud": "app",
            "token_use": "id",
            "exp": now() + 300,
            "iat": now(),
            "custom:customer_id": "acme",
        }
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    assert (await verifier.verify(token(old, "k1"))).customer_id == "acme"
    document["keys"] = [public_jwk(old, "k1"), public_jwk(new, "k2")]  # the pool rotates
    assert (await verifier.verify(token(new, "k2"))).customer_id == "acme"
    assert verifier.jwks.fetches == 2
    # A key published under k2 does not make an old-key signature valid under k2.
    await rejected(verifier, token(old, "k2"), BadSignature)


async def test_an_unreachable_jwks_is_a_503_not_a_401(jwks_server: tuple[str, dict[str, Any]]) -> None:
    url, _ = jwks_server
    verifier = CognitoTokenVerifier(
        issuer="https://issuer.example/pool",
        client_ids={"app"},
        jwks=JwksCache(url.replace("/jwks.json", "/missing.json")),
    )
    token = jwt.encode({"exp": now() + 60}, own_key(), algorithm="RS256", headers={"kid": "k"})
    with pytest.raises(JwksUnavailable) as err:
        await verifier.verify(token)
    assert err.value.http_status == 503 and err.value.code == "AUTH_JWKS_UNAVAILABLE"
