"""Every rejected credential is a 401 over HTTP with its stable code; rate limits answer 429 + Retry-After;
the local-demo switch turns auth off and the pages say so."""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from stamen.auth import ApiKeyService
from tests.api.conftest import EVENTS_SECRET, World, settings_for, start
from tests.auth.cognito_lab import PASSWORD, CognitoLab, moto_signing_key, now, resign
from tests.intake.s3kit import make_intake, make_settings


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def forged_tokens(token: str) -> dict[str, tuple[str, str]]:
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    moto = moto_signing_key()
    return {
        "forged signature": (resign(token, stranger, headers={"kid": kid}), "AUTH_TOKEN_BAD_SIGNATURE"),
        "expired": (
            resign(token, moto, headers={"kid": kid}, exp=now() - 3600, iat=now() - 7200),
            "AUTH_TOKEN_EXPIRED",
        ),
        "alg none": (f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(claims)}.", "AUTH_TOKEN_ALG_NOT_ALLOWED"),
        "wrong issuer": (
            resign(token, moto, headers={"kid": kid}, iss="https://cognito-idp.example/evil"),
            "AUTH_TOKEN_WRONG_ISSUER",
        ),
        "wrong audience": (
            resign(token, moto, headers={"kid": kid}, aud="someone-elses-client"),
            "AUTH_TOKEN_WRONG_AUDIENCE",
        ),
        "unknown kid": (
            resign(token, stranger, headers={"kid": "not-in-the-jwks"}),
            "AUTH_TOKEN_UNKNOWN_KID",
        ),
    }


async def test_bad_tokens_and_keys_are_401_with_their_codes(world: World) -> None:
    path = f"/api/v1/worksets/{world.a.target.workset_id}"
    ok = await world.client.get(path, headers=world.bearer(world.a.id_token))
    assert ok.status == 200  # the untouched token works, so each failure below is the change made to it
    cases = forged_tokens(world.a.id_token)
    keys = ApiKeyService(world.pool, world.auth)
    revoked = await keys.create(world.a.id, "to-revoke", ttl_days=1)
    await keys.revoke(world.a.id, revoked.record.id)
    cases["revoked API key"] = (revoked.key, "API_KEY_REVOKED")
    cases["made-up API key"] = ("stm_0123456789ab_" + "A" * 43, "API_KEY_INVALID")
    results = {}
    for name, (credential, _code) in cases.items():
        response = await world.client.get(path, headers=world.bearer(credential))
        body = await response.json()
        results[name] = (response.status, body["code"])
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), name
        assert credential not in json.dumps(body)
    assert results == {name: (401, code) for name, (_, code) in cases.items()}
    via_header = await world.client.get(path, headers={"X-Api-Key": revoked.key})
    assert via_header.status == 401 and (await via_header.json())["code"] == "API_KEY_REVOKED"


@pytest.mark.parametrize("path", ["/api/v1/worksets", "/api/v1/schema", "/api/v1/customers"])
async def test_no_credentials_is_401_json(world: World, path: str) -> None:
    """The API's answer; a page without credentials sends the browser to sign in (tests/web)."""
    response = await world.client.get(path)
    body = await response.json()
    assert (
        response.status == 401
        and body["code"] == "AUTH_TOKEN_MISSING"
        and set(body) == {"code", "message", "details"}
    )


async def test_public_routes_need_no_credentials(world: World) -> None:
    for path in ("/healthz", "/metrics", "/api/v1/openapi.json", "/api/v1/docs"):
        assert (await world.client.get(path)).status == 200, path
    login = await world.client.post(
        "/api/v1/auth/login", json={"email": "nobody@lab.example", "password": "x"}
    )
    assert login.status == 401 and (await login.json())["code"] == "AUTH_LOGIN_FAILED"


async def test_s3_events_need_the_shared_secret_or_an_operator(world: World) -> None:
    event = {"Records": []}
    refused = await world.client.post("/api/v1/s3-events", json=event)
    assert refused.status == 401
    wrong = await world.client.post(
        "/api/v1/s3-events", json=event, headers={"X-Stamen-Events-Secret": "nope"}
    )
    assert wrong.status == 401
    customer = await world.client.post("/api/v1/s3-events", json=event, headers=world.key(world.a))
    assert customer.status == 403
    for headers in ({"X-Stamen-Events-Secret": EVENTS_SECRET}, world.operator):
        response = await world.client.post("/api/v1/s3-events", json=event, headers=headers)
        assert response.status == 200, await response.text()


async def test_user_flows_over_http(world: World) -> None:
    email = "new-user@lab.example"
    password = "Correct-Horse-9-Battery"
    registered = await world.client.post(
        "/api/v1/auth/register",
        headers=world.operator,
        json={"email": email, "password": password, "customer_id": world.a.id, "confirm": True},
    )
    assert registered.status == 201, await registered.text()
    tokens = await (
        await world.client.post("/api/v1/auth/login", json={"email": email, "password": password})
    ).json()
    mine = await world.client.get("/api/v1/worksets", headers=world.bearer(tokens["id_token"]))
    assert {w["tenant"] for w in (await mine.json())["items"]} == {world.a.id}
    access = await world.client.get("/api/v1/worksets", headers=world.bearer(tokens["access_token"]))
    assert access.status == 200  # access tokens get their tenant from Cognito
    # A fresh session, signed out before its access token is first used (the tenant lookup of a token is
    # cached for 60 s, so a token already seen stays usable that long after logout; see docs/api.md).
    second = await (
        await world.client.post("/api/v1/auth/login", json={"email": email, "password": password})
    ).json()
    out = await world.client.post("/api/v1/auth/logout", headers=world.bearer(second["access_token"]))
    assert out.status == 200
    after = await world.client.get("/api/v1/worksets", headers=world.bearer(second["access_token"]))
    assert after.status == 401 and (await after.json())["code"] == "AUTH_TOKEN_REVOKED"
    forgot = await (await world.client.post("/api/v1/auth/forgot-password", json={"email": email})).json()
    assert forgot["emulator_code"]
    reset = await world.client.post(
        "/api/v1/auth/reset-password",
        json={"email": email, "code": forgot["emulator_code"], "new_password": "Another-Horse-8-Battery"},
    )
    assert reset.status == 200
    relogin = await world.client.post(
        "/api/v1/auth/login", json={"email": email, "password": "Another-Horse-8-Battery"}
    )
    assert relogin.status == 200


async def test_users_are_registered_only_for_onboarded_customers(world: World) -> None:
    response = await world.client.post(
        "/api/v1/auth/register",
        headers=world.operator,
        json={
            "email": "ghost@lab.example",
            "password": PASSWORD,
            "customer_id": "no-such-customer",
            "confirm": True,
        },
    )
    body = await response.json()
    assert response.status == 404 and body["code"] == "CUSTOMER_NOT_FOUND"
    login = await world.client.post(
        "/api/v1/auth/login", json={"email": "ghost@lab.example", "password": PASSWORD}
    )
    assert login.status == 401  # nobody was made in Cognito


async def test_logout_with_an_id_token_refuses_that_token_at_once(world: World) -> None:
    email, tokens = await world.lab.user(world.a.id)
    path = f"/api/v1/worksets/{world.a.target.workset_id}"
    assert (await world.client.get(path, headers=world.bearer(tokens.id_token))).status == 200
    out = await world.client.post("/api/v1/auth/logout", headers=world.bearer(tokens.id_token))
    assert out.status == 200 and await out.json() == {"ok": True}
    for attempt in (path, "/api/v1/auth/logout"):
        after = await world.client.request(
            "GET" if attempt == path else "POST", attempt, headers=world.bearer(tokens.id_token)
        )
        body = await after.json()
        assert after.status == 401 and body["code"] == "AUTH_TOKEN_REVOKED", (attempt, body)
        assert after.headers["WWW-Authenticate"].startswith("Bearer")
    # Cognito signed the user out too: the session's refresh token is dead. Signing in again works.
    again = await world.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    fresh = (await again.json())["id_token"]
    assert again.status == 200 and (await world.client.get(path, headers=world.bearer(fresh))).status == 200


async def test_codes_and_password_resets_do_not_tell_who_has_an_account(world: World) -> None:
    email, _ = await world.lab.user(world.a.id)
    # moto's ConfirmSignUp accepts any code for a known user, so a wrong code is shown on the reset, which
    # moto does check (codes starting with moto-confirmation-code:); confirm is checked for an unknown user.
    wrong = await world.client.post(
        "/api/v1/auth/confirm", json={"email": "nobody@lab.example", "code": "123456"}
    )
    body = await wrong.json()
    assert wrong.status == 400 and body["code"] == "AUTH_CODE_INVALID" and "nobody" not in json.dumps(body)
    await world.client.post("/api/v1/auth/forgot-password", json={"email": email})
    bad_reset = await world.client.post(
        "/api/v1/auth/reset-password",
        json={
            "email": email,
            "code": "moto-confirmation-code:000000",
            "new_password": "Another-Horse-8-Battery",
        },
    )
    assert bad_reset.status == 400 and (await bad_reset.json())["code"] == "AUTH_CODE_INVALID"
    unknown_reset = await world.client.post(
        "/api/v1/auth/reset-password",
        json={
            "email": "nobody@lab.example",
            "code": "moto-confirmation-code:000000",
            "new_password": "Another-Horse-8",
        },
    )
    assert unknown_reset.status == 400 and (await unknown_reset.json())["code"] == "AUTH_CODE_INVALID"
    # Forgot-password: the same status and answer for a user and a stranger with the same-looking address.
    # (Only the local emulator adds its code for a real user; real Cognito mails it.)
    stranger = "u" + email[1:].replace("@lab.example", "x@lab.example")
    answers = []
    for address in (email, stranger):
        response = await world.client.post("/api/v1/auth/forgot-password", json={"email": address})
        answer = await response.json()
        answers.append((response.status, {k: v for k, v in answer.items() if k != "emulator_code"}))
    assert answers[0] == answers[1] == (200, {"destination": "u***@l***", "medium": "EMAIL"})


async def test_rate_limits_are_per_principal(
    database_url: str, nats_url: str, moto_endpoint: str, world: World
) -> None:
    auth, customers = settings_for(world.lab, moto_endpoint, database_url)
    auth = auth.model_copy(update={"rate_limit_burst": 3, "rate_limit_per_second": 0.05})
    client = await start(make_settings(database_url, nats_url, moto_endpoint), make_intake(), auth, customers)
    try:
        a, b = world.key(world.a), world.key(world.b)
        assert [(await client.get("/api/v1/regions", headers=a)).status for _ in range(3)] == [200, 200, 200]
        limited = await client.get("/api/v1/regions", headers=a)
        assert limited.status == 429 and (await limited.json())["code"] == "RATE_LIMITED"
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        assert (await client.get("/api/v1/regions", headers=b)).status == 200  # B has its own bucket
        assert (await client.get("/api/v1/regions", headers=world.bearer(world.a.id_token))).status == 200
        assert (await client.get("/api/v1/regions", headers=a)).status == 429  # A's key is still limited
    finally:
        await client.close()


async def test_api_keys_are_shown_once_and_scoped(world: World) -> None:
    created = await world.client.post(
        "/api/v1/api-keys", json={"name": "sequencer", "ttl_days": 5}, headers=world.bearer(world.a.id_token)
    )
    body = await created.json()
    assert (
        created.status == 201
        and body["key"].startswith("stm_")
        and body["record"]["customer_id"] == world.a.id
    )
    listed = await (await world.client.get("/api/v1/api-keys", headers=world.key(world.a))).json()
    assert body["key"] not in json.dumps(listed) and "sequencer" in {k["name"] for k in listed["items"]}
    works = await world.client.get("/api/v1/regions", headers={"X-Api-Key": body["key"]})
    assert works.status == 200 and (await works.json())["items"][0]["health"] == "healthy"
    gone = await world.client.delete(f"/api/v1/api-keys/{body['record']['id']}", headers=world.key(world.a))
    assert gone.status == 200 and (await gone.json())["revoked_at"]
    assert (await world.client.get("/api/v1/regions", headers={"X-Api-Key": body["key"]})).status == 401


async def test_rate_limit_is_429_with_retry_after(
    database_url: str, nats_url: str, moto_endpoint: str, pool: asyncpg.Pool
) -> None:
    lab = await CognitoLab.create(moto_endpoint)
    auth, customers = settings_for(lab, moto_endpoint, database_url)
    auth = auth.model_copy(update={"rate_limit_burst": 3, "rate_limit_per_second": 0.05})
    client = await start(make_settings(database_url, nats_url, moto_endpoint), make_intake(), auth, customers)
    try:
        headers = {"Authorization": "Bearer stm_0123456789ab_" + "A" * 43}  # unknown key: anonymous bucket
        statuses = [(await client.get("/api/v1/regions", headers=headers)).status for _ in range(3)]
        assert statuses == [401, 401, 401]
        limited = await client.post("/api/v1/auth/login", json={"email": "a@b.example", "password": "x"})
        assert limited.status == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        assert (await limited.json())["code"] == "RATE_LIMITED"
    finally:
        await client.close()


async def test_local_demo_setting_turns_auth_off_and_the_banner_on(
    database_url: str, nats_url: str, moto_endpoint: str, world: World
) -> None:
    page = await world.client.get("/", headers=world.operator)
    assert page.status == 200 and "Local demo mode" not in await page.text()
    auth, customers = settings_for(world.lab, moto_endpoint, database_url, auth_enabled=False)
    demo = await start(make_settings(database_url, nats_url, moto_endpoint), make_intake(), auth, customers)
    try:
        page = await demo.get("/")
        assert page.status == 200 and "Local demo mode" in await page.text()
        listed = await (await demo.get("/api/v1/worksets")).json()
        assert {w["tenant"] for w in listed["items"]} == {world.a.id, world.b.id}
    finally:
        await demo.close()
