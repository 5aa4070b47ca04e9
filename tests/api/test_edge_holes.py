"""The smaller holes around the API, each closed: tokens of disabled or deleted users, the usage month no
calendar has, oversized headers, API keys minting credentials, an empty pepper, and the first sign-in of an
invited user (the new-password challenge)."""

from __future__ import annotations

import pytest

from services.portal.app import init_app
from stamen.auth import ApiKeyService, AuthSettings
from stamen.auth.errors import ApiKeyPepperMissing
from tests.api.conftest import World
from tests.auth.cognito_lab import PASSWORD
from tests.intake.s3kit import make_settings


async def test_the_smaller_holes_are_closed(world: World) -> None:
    """One world for all three (each world costs seconds of onboarding)."""
    await tokens_of_disabled_and_deleted_users_are_refused_with_401(world)
    await odd_requests_get_json_answers_with_stable_codes(world)
    await an_invited_user_sets_a_new_password_at_first_sign_in(world)


async def tokens_of_disabled_and_deleted_users_are_refused_with_401(world: World) -> None:
    path = f"/api/v1/worksets/{world.a.target.workset_id}"
    pool_id = world.lab.pool.user_pool_id
    disabled_email, disabled = await world.lab.user(world.a.id)
    deleted_email, deleted = await world.lab.user(world.a.id)
    operator_email, operator = await world.lab.user(None, operator=True)
    world.lab.boto.admin_disable_user(UserPoolId=pool_id, Username=disabled_email)
    world.lab.boto.admin_disable_user(UserPoolId=pool_id, Username=operator_email)
    world.lab.boto.admin_delete_user(UserPoolId=pool_id, Username=deleted_email)
    for label, token in (
        ("disabled id", disabled.id_token),
        ("disabled access", disabled.access_token),
        ("deleted id", deleted.id_token),
        ("deleted access", deleted.access_token),
        ("disabled operator id", operator.id_token),
    ):
        answer = await world.client.get(path, headers=world.bearer(token))
        body = await answer.json()
        assert answer.status == 401 and body["code"] in ("AUTH_USER_DISABLED", "AUTH_TOKEN_REVOKED"), (
            label,
            body,
        )
    # Before, a deleted user's access token was a 502 (AUTH_IDP_ERROR): it is the caller's problem, a 401.
    gone = await (await world.client.get(path, headers=world.bearer(deleted.access_token))).json()
    assert gone["code"] == "AUTH_USER_DISABLED"
    assert (await world.client.get(path, headers=world.bearer(world.a.id_token))).status == 200


async def odd_requests_get_json_answers_with_stable_codes(world: World) -> None:
    usage = await world.client.get(
        f"/api/v1/customers/{world.a.id}/usage", params={"month": "9999-12"}, headers=world.key(world.a)
    )
    assert (usage.status, (await usage.json())["code"]) == (400, "USAGE_MONTH_INVALID")
    for size in (9 * 1024, 1024 * 1024):
        big = await world.client.get(
            "/api/v1/worksets", headers={"Authorization": "Bearer " + "k3y" * (size // 3)}
        )
        text = await big.text()
        assert (big.status, big.content_type) == (431, "application/json") and "k3y" not in text, text[:200]
    # An API key may not mint credentials that would outlive its own revocation; a user may.
    for route, body in (
        ("/api/v1/api-keys", {"name": "minted", "ttl_days": 365}),
        ("/api/v1/nats-credentials", {"name": "minted"}),
    ):
        minted = await world.client.post(route, json=body, headers=world.key(world.a))
        assert (minted.status, (await minted.json())["code"]) == (403, "AUTH_FORBIDDEN"), route
        assert (
            await world.client.post(route, json=body, headers=world.bearer(world.a.id_token))
        ).status == 201


async def an_invited_user_sets_a_new_password_at_first_sign_in(world: World) -> None:
    pool_id, email = world.lab.pool.user_pool_id, f"invited-{world.a.id}@lab.example"
    world.lab.boto.admin_create_user(
        UserPoolId=pool_id, Username=email, TemporaryPassword="Temp-Pass-12345", MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "email", "Value": email}, {"Name": "custom:customer_id", "Value": world.a.id}],
    )  # fmt: skip
    first = await world.client.post(
        "/api/v1/auth/login", json={"email": email, "password": "Temp-Pass-12345"}
    )
    challenge = await first.json()
    assert (first.status, challenge["code"]) == (401, "AUTH_NEW_PASSWORD_REQUIRED")
    session = challenge["details"]["session"]
    weak = await world.client.post(
        "/api/v1/auth/new-password", json={"email": email, "session": session, "new_password": "short"}
    )
    assert (weak.status, (await weak.json())["code"]) == (400, "AUTH_PASSWORD_POLICY")
    forged = await world.client.post(
        "/api/v1/auth/new-password", json={"email": email, "session": "x" * 40, "new_password": PASSWORD}
    )
    assert forged.status == 401 and (await forged.json())["code"] == "AUTH_LOGIN_FAILED"
    done = await world.client.post(
        "/api/v1/auth/new-password", json={"email": email, "session": session, "new_password": PASSWORD}
    )
    tokens = await done.json()
    assert done.status == 200, tokens
    mine = await world.client.get("/api/v1/customers", headers=world.bearer(tokens["id_token"]))
    assert [c["customer_id"] for c in (await mine.json())["items"]] == [world.a.id]
    again = await world.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert again.status == 200


async def test_an_empty_pepper_is_refused(pool: object, database_url: str, nats_url: str) -> None:
    with pytest.raises(ApiKeyPepperMissing, match="STAMEN_API_KEY_PEPPER"):
        init_app(
            make_settings(database_url, nats_url, "http://127.0.0.1:9"), auth=AuthSettings(auth_enabled=True)
        )
    with pytest.raises(ApiKeyPepperMissing):
        ApiKeyService(pool, AuthSettings(api_key_pepper="  "))  # type: ignore[arg-type]
