"""Register, confirm, login, logout, forgot/reset password against moto's Cognito."""

from __future__ import annotations

import uuid

import pytest

from stamen.auth import cognito
from stamen.auth.errors import (
    CodeInvalid,
    LoginFailed,
    PasswordPolicy,
    TokenRevoked,
    UserExists,
    UserNotConfirmed,
)
from stamen.auth.tokens import CognitoTokenVerifier
from tests.auth.cognito_lab import PASSWORD, REGION, CognitoLab


@pytest.fixture
async def lab(moto_endpoint: str) -> CognitoLab:
    return await CognitoLab.create(moto_endpoint)


async def test_register_confirm_login(lab: CognitoLab) -> None:
    email = f"new-{uuid.uuid4().hex[:6]}@lab.example"
    app = lab.pool.app_client_id
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        sub = await cognito.register(
            client, app_client_id=app, email=email, password=PASSWORD, customer_id="acme"
        )
        with pytest.raises(UserNotConfirmed) as not_confirmed:
            await cognito.login(client, app_client_id=app, username=email, password=PASSWORD)
        assert not_confirmed.value.code == "AUTH_USER_NOT_CONFIRMED"
        with pytest.raises(UserExists):
            await cognito.register(
                client, app_client_id=app, email=email, password=PASSWORD, customer_id="acme"
            )
        await cognito.admin_confirm(client, user_pool_id=lab.pool.user_pool_id, username=email)
        with pytest.raises(LoginFailed) as wrong:
            await cognito.login(client, app_client_id=app, username=email, password=PASSWORD + "x")
        assert wrong.value.code == "AUTH_LOGIN_FAILED"
        tokens = await cognito.login(client, app_client_id=app, username=email, password=PASSWORD)
    principal = await lab.verifier().verify(tokens.id_token)
    assert principal.subject == sub and principal.customer_id == "acme"
    assert tokens.refresh_token and tokens.expires_in > 0


async def test_the_pool_password_policy_is_enforced(lab: CognitoLab) -> None:
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        with pytest.raises(PasswordPolicy):
            await cognito.register(
                client,
                app_client_id=lab.pool.app_client_id,
                email="weak@lab.example",
                password="short1A",
                customer_id="acme",
            )


async def test_forgot_and_reset_password(lab: CognitoLab) -> None:
    email, _ = await lab.user("acme")
    app = lab.pool.app_client_id
    new_password = "Another-Long-Pass-42"
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        delivery = await cognito.forgot_password(client, app_client_id=app, username=email)
        assert delivery.medium == "EMAIL" and delivery.destination.startswith(email[0])
        assert delivery.emulator_code and delivery.emulator_code.startswith("moto-confirmation-code:")
        with pytest.raises(CodeInvalid):
            await cognito.reset_password(
                client,
                app_client_id=app,
                username=email,
                code="moto-confirmation-code:000000",
                new_password=new_password,
            )
        await cognito.reset_password(
            client, app_client_id=app, username=email, code=delivery.emulator_code, new_password=new_password
        )
        with pytest.raises(LoginFailed):
            await cognito.login(client, app_client_id=app, username=email, password=PASSWORD)
        tokens = await cognito.login(client, app_client_id=app, username=email, password=new_password)
    assert (await lab.verifier().verify(tokens.id_token)).customer_id == "acme"


async def test_logout_revokes_the_access_token_at_cognito(lab: CognitoLab) -> None:
    _, tokens = await lab.user("acme")
    async with cognito.cognito_client(REGION, lab.endpoint) as client:
        verifier = CognitoTokenVerifier.from_settings(
            lab.settings(), tenant_resolver=cognito.CognitoTenantResolver(client)
        )
        assert (await verifier.verify(tokens.access_token)).customer_id == "acme"
        await cognito.logout(client, access_token=tokens.access_token)
        # A fresh resolver (no cache) asks Cognito again, which no longer accepts the token.
        after = CognitoTokenVerifier.from_settings(
            lab.settings(), tenant_resolver=cognito.CognitoTenantResolver(client)
        )
        with pytest.raises(TokenRevoked) as err:
            await after.verify(tokens.access_token)
        assert err.value.code == "AUTH_TOKEN_REVOKED"
        with pytest.raises(LoginFailed):  # the old access token cannot be used with Cognito any more
            await cognito.logout(client, access_token=tokens.access_token)


async def test_admin_logout_works_in_any_region(moto_endpoint: str) -> None:
    """admin_user_global_sign_out is a signed call, so moto routes it to the pool's region."""
    async with cognito.cognito_client("us-west-2", moto_endpoint) as client:
        pool = await cognito.ensure_user_pool(client, name=f"west-{uuid.uuid4().hex[:6]}", create=True)
        email = "w@lab.example"
        await cognito.register(
            client, app_client_id=pool.app_client_id, email=email, password=PASSWORD, customer_id="acme"
        )
        await cognito.admin_confirm(client, user_pool_id=pool.user_pool_id, username=email)
        tokens = await cognito.login(
            client, app_client_id=pool.app_client_id, username=email, password=PASSWORD
        )
        resolver = cognito.CognitoTenantResolver(client)
        assert await resolver(tokens.access_token, {}) == "acme"
        await cognito.admin_logout(client, user_pool_id=pool.user_pool_id, username=email)
        with pytest.raises(TokenRevoked):
            await cognito.CognitoTenantResolver(client)(tokens.access_token, {})


async def test_ensure_user_pool_is_idempotent_and_refuses_to_invent_pools(moto_endpoint: str) -> None:
    name = f"idem-{uuid.uuid4().hex[:6]}"
    async with cognito.cognito_client(REGION, moto_endpoint) as client:
        first = await cognito.ensure_user_pool(client, name=name, create=True)
        again = await cognito.ensure_user_pool(client, name=name, create=True)
        assert first == again
        found = await cognito.ensure_user_pool(client, name=name, create=False)
        assert found == first
        with pytest.raises(cognito.IdentityProviderError):
            await cognito.ensure_user_pool(client, name=f"absent-{uuid.uuid4().hex[:6]}", create=False)
