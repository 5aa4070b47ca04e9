"""Cognito user flows over HTTP: register, confirm, login (and an invited user's new password), logout,
forgot/reset password.

Login, confirm and the password reset are public. Registering needs a caller who may act for the tenant
(an operator, or a signed-in user of that tenant): otherwise anyone could give themselves any tenant, since
the tenant claim is set at sign-up. Logout signs the calling user out everywhere."""

from __future__ import annotations

import jwt
from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import body, principal_of, reply, tenant_for
from services.portal.api.context import SECURITY, Security
from stamen.auth import cognito
from stamen.auth.errors import (
    AuthError,
    CodeInvalid,
    Forbidden,
    IdentityProviderError,
    LoginFailed,
    UserNotFound,
)
from stamen.customers import AsyncCustomerManager
from stamen.service.keys import POOL


def _code_invalid(exc: AuthError) -> AuthError:
    """An unknown user is answered like a wrong code (no account enumeration). Cognito outages stay 502."""
    if isinstance(exc, UserNotFound) or exc.details.get("aws_code") in (
        "ResourceNotFoundException",
        "UserNotFoundException",
    ):
        return CodeInvalid("the code is wrong or has expired")
    return exc


async def register(request: web.Request) -> web.Response:
    req = await body(request, m.RegisterRequest)
    principal = principal_of(request)
    tenant = tenant_for(request, req.customer_id)
    if principal.kind == "api_key":
        raise Forbidden("API keys cannot register users; sign in as a user of the tenant or an operator")
    if req.confirm and not principal.is_operator:
        raise Forbidden("only operators may confirm a user without the mailed code")
    security = request.app[SECURITY]
    # A user's tenant claim is fixed at sign-up: only an onboarded customer's (CUSTOMER_NOT_FOUND otherwise).
    await AsyncCustomerManager(request.app[POOL], security.customers).get_customer(tenant)
    pool = await security.user_pool()
    sub = await cognito.register(
        security.cognito,
        app_client_id=pool.app_client_id,
        email=req.email,
        password=req.password,
        customer_id=tenant,
    )
    if req.confirm:
        await cognito.admin_confirm(security.cognito, user_pool_id=pool.user_pool_id, username=req.email)
    return reply(m.RegisterResponse(user_sub=sub, username=req.email, confirmed=req.confirm), 201)


async def confirm(request: web.Request) -> web.Response:
    req = await body(request, m.ConfirmRequest)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    try:
        await cognito.confirm_with_code(
            security.cognito, app_client_id=pool.app_client_id, username=req.email, code=req.code
        )
    except (UserNotFound, IdentityProviderError) as exc:
        raise _code_invalid(exc) from None
    return reply(m.OkResponse(ok=True))


async def login(request: web.Request) -> web.Response:
    req = await body(request, m.LoginRequest)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    try:
        tokens = await cognito.login(
            security.cognito, app_client_id=pool.app_client_id, username=req.email, password=req.password
        )
    except UserNotFound:  # say no more than for a wrong password (the emulator does not hide it itself)
        raise LoginFailed("login failed") from None
    return reply(_tokens_out(tokens))


async def new_password(request: web.Request) -> web.Response:
    """An invited user's first sign-in: the temporary password got AUTH_NEW_PASSWORD_REQUIRED and a session;
    this sets the new password and signs the user in."""
    req = await body(request, m.NewPasswordRequest)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    tokens = await cognito.answer_new_password(
        security.cognito, app_client_id=pool.app_client_id, username=req.email, session=req.session,
        new_password=req.new_password,
    )  # fmt: skip
    return reply(_tokens_out(tokens))


def _tokens_out(tokens: cognito.Tokens) -> m.TokensResponse:
    return m.TokensResponse(
        id_token=tokens.id_token,
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_in=tokens.expires_in,
        token_type=tokens.token_type,
    )


async def logout(request: web.Request) -> web.Response:
    principal = principal_of(request)
    if principal.kind == "api_key" or principal.username is None:
        raise Forbidden("only a signed-in user can sign out; revoke an API key instead")
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    await sign_out_everywhere(request.app[SECURITY], token, principal.username)
    return reply(m.OkResponse(ok=True))


async def sign_out_everywhere(security: Security, token: str, username: str) -> None:
    """Sign the user of a verified `token` out everywhere (the API's logout and the portal's sign-out)."""
    claims = jwt.decode(token, options={"verify_signature": False})  # verified by the caller
    if claims.get("token_use") == "access":
        # GlobalSignOut with the access token: Cognito stops accepting it at once.
        await cognito.logout(security.cognito, access_token=token)
    else:
        # An id token is a signed JWT that Cognito cannot take back: sign the user out by name (refresh and
        # access tokens die), and below this process refuses the id token itself until it expires.
        pool = await security.user_pool()
        await cognito.admin_logout(security.cognito, user_pool_id=pool.user_pool_id, username=username)
    security.sign_out(token, float(claims.get("exp", 0)))


async def forgot_password(request: web.Request) -> web.Response:
    req = await body(request, m.ForgotPasswordRequest)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    # The same answer for every address, so the endpoint cannot be used to find out who has an account
    # (what Cognito itself does with PreventUserExistenceErrors): the destination is masked from the
    # address asked about, never Cognito's, whose form differs for unknown users. No code goes to those.
    # A stamen username is the e-mail address, so codes always go by e-mail.
    try:
        sent = await cognito.forgot_password(
            security.cognito, app_client_id=pool.app_client_id, username=req.email
        )
    except UserNotFound:
        return reply(
            m.CodeDeliveryResponse(destination=mask_email(req.email), medium="EMAIL", emulator_code=None)
        )
    return reply(
        m.CodeDeliveryResponse(
            destination=mask_email(req.email), medium="EMAIL", emulator_code=sent.emulator_code
        )
    )


def mask_email(email: str) -> str:
    """`lab-user@acme.example` -> `l***@a***`, the shape Cognito uses in its code delivery details."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain[:1]}***"


async def reset_password(request: web.Request) -> web.Response:
    req = await body(request, m.ResetPasswordRequest)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    try:
        await cognito.reset_password(
            security.cognito,
            app_client_id=pool.app_client_id,
            username=req.email,
            code=req.code,
            new_password=req.new_password,
        )
    except (UserNotFound, IdentityProviderError) as exc:
        raise _code_invalid(exc) from None
    return reply(m.OkResponse(ok=True))
