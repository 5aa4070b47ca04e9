"""Sign-in, the new-password challenge, sign-out, sign-up by invitation with confirmation, and the
forgotten-password reset: Cognito's flows (stamen.auth.cognito), as the API uses them.

Failed attempts count against the caller's address in the API's rate limiter, and the answers never say
whether an address has an account."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from services.portal.api.auth_endpoints import mask_email
from services.portal.api.context import SECURITY
from services.portal.web import csrf, sessions
from services.portal.web.guard import SIGNED_IN
from services.portal.web.render import render, safe_next, see_other
from services.portal.web.store import InvitationRepository
from stamen.auth import cognito
from stamen.auth.errors import (
    AuthError,
    CodeInvalid,
    IdentityProviderError,
    IdentityRequestInvalid,
    LoginFailed,
    PasswordPolicy,
    UserExists,
    UserNotConfirmed,
    UserNotFound,
)
from stamen.inputs.objects import endpoint_is_loopback
from stamen.service.keys import POOL, SETTINGS

WRONG = "The e-mail address or the password is wrong."


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) and name != "password" else str(value or "")


def emulator(request: web.Request) -> bool:
    """The AWS APIs are the embedded emulator (moto), which sends no mail."""
    return endpoint_is_loopback(
        request.app[SECURITY].auth.aws_endpoint_url or request.app[SETTINGS].aws_endpoint_url
    )


def _count_failure(request: web.Request) -> None:
    """Failed attempts are limited per address like the API's; RateLimited becomes the 429 page."""
    request.app[SECURITY].limiter.enforce(f"anonymous:{request.remote}")


async def sign_in_form(request: web.Request) -> web.Response:
    if not request.app[SECURITY].auth.auth_enabled:
        see_other("/")
    return await render(
        request,
        "auth/signin.html",
        {
            "next": safe_next(request.query.get("next")),
            "email": request.query.get("email", ""),
            "error": None,
        },
    )


async def sign_in(request: web.Request) -> web.Response:
    form = await request.post()
    email, password = _field(form, "email"), _field(form, "password")
    target = safe_next(_field(form, "next"))
    security = request.app[SECURITY]
    if not security.auth.auth_enabled:
        see_other("/")

    async def again(error: str, status: int = 400) -> web.Response:
        return await render(
            request, "auth/signin.html", {"next": target, "email": email, "error": error}, status=status
        )

    if not email or not password:
        return await again("Enter your e-mail address and password.")
    pool = await security.user_pool()
    try:
        tokens = await cognito.login(
            security.cognito, app_client_id=pool.app_client_id, username=email, password=password
        )
    except LoginFailed as exc:
        if exc.details.get("challenge") == "NEW_PASSWORD_REQUIRED" and exc.details.get("session"):
            return await _challenge_page(request, email, str(exc.details["session"]), target, None)
        _count_failure(request)
        return await again(WRONG, 401)
    except UserNotFound:
        _count_failure(request)
        return await again(WRONG, 401)
    except UserNotConfirmed:
        see_other("/signup/confirm", email=email)
    except IdentityProviderError:
        return await again("The sign-in service is not answering; try again in a minute.", 502)
    return await _signed_in(request, tokens, target, email)


async def _signed_in(request: web.Request, tokens: cognito.Tokens, target: str, email: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": target})
    try:
        await sessions.start(request, response, tokens, email=email)
    except AuthError as exc:  # e.g. a user with no tenant who is not an operator
        return await render(
            request,
            "auth/signin.html",
            {"next": target, "email": "", "error": f"This account cannot use the portal: {exc}"},
            status=403,
        )
    csrf.renew(request)
    return response


async def _challenge_page(
    request: web.Request, email: str, challenge: str, target: str, error: str | None, status: int = 200
) -> web.Response:
    context = {"email": email, "challenge": challenge, "next": target, "error": error}
    return await render(request, "auth/new_password.html", context, status=status)


async def new_password(request: web.Request) -> web.Response:
    """NEW_PASSWORD_REQUIRED (an invited user's first sign-in): choose a password, then signed in."""
    form = await request.post()
    email, challenge = _field(form, "email"), _field(form, "challenge")
    password, repeat = _field(form, "password"), _field(form, "password_again")
    target = safe_next(_field(form, "next"))
    if password != repeat:
        return await _challenge_page(request, email, challenge, target, "The two passwords differ.", 400)
    security = request.app[SECURITY]
    pool = await security.user_pool()
    try:
        tokens = await cognito.answer_new_password(
            security.cognito,
            app_client_id=pool.app_client_id,
            username=email,
            session=challenge,
            new_password=password,
        )
    except (PasswordPolicy, IdentityRequestInvalid) as exc:
        return await _challenge_page(request, email, challenge, target, str(exc), 400)
    except (LoginFailed, CodeInvalid, UserNotFound):
        _count_failure(request)
        see_other("/signin", email=email)
    return await _signed_in(request, tokens, target, email)


async def sign_out(request: web.Request) -> web.Response:
    response = web.Response(status=303, headers={"Location": "/signin?notice=signed-out"})
    await sessions.end(request, response, request.get(SIGNED_IN))
    csrf.renew(request)
    return response


# --- sign-up by invitation ------------------------------------------------------------------------
def invitation_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_up_form(request: web.Request) -> web.Response:
    token = request.query.get("invite", "")
    async with request.app[POOL].acquire() as conn:
        invitation = await InvitationRepository(conn).open_by_token(invitation_hash(token)) if token else None
    context = {"invitation": invitation, "invite": token, "error": None}
    return await render(request, "auth/signup.html", context, status=200 if invitation else 404)


async def sign_up(request: web.Request) -> web.Response:
    form = await request.post()
    token, password, repeat = _field(form, "invite"), _field(form, "password"), _field(form, "password_again")
    security = request.app[SECURITY]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        repo = InvitationRepository(conn)
        invitation = await repo.open_by_token(invitation_hash(token)) if token else None
        if invitation is None:
            _count_failure(request)
            return await render(
                request, "auth/signup.html", {"invitation": None, "invite": "", "error": None}, status=404
            )
        error = "The two passwords differ." if password != repeat else None
        if error is None:
            try:
                pool = await security.user_pool()
                await cognito.register(
                    security.cognito,
                    app_client_id=pool.app_client_id,
                    email=invitation.email,
                    password=password,
                    customer_id=invitation.customer_id,
                )
            except UserExists:
                error = "This e-mail address already has an account: sign in, or reset its password."
            except (PasswordPolicy, IdentityRequestInvalid) as exc:
                error = str(exc)
        if error is not None:
            context = {"invitation": invitation, "invite": token, "error": error}
            return await render(request, "auth/signup.html", context, status=400)
        await repo.accept(invitation.id)
    see_other("/signup/confirm", email=invitation.email, notice="confirm-sent")


async def confirm_form(request: web.Request) -> web.Response:
    context = {"email": request.query.get("email", ""), "error": None, "emulator": emulator(request)}
    return await render(request, "auth/confirm.html", context)


async def confirm(request: web.Request) -> web.Response:
    form = await request.post()
    email, code = _field(form, "email"), _field(form, "code")
    security = request.app[SECURITY]
    pool = await security.user_pool()
    try:
        await cognito.confirm_with_code(
            security.cognito, app_client_id=pool.app_client_id, username=email, code=code
        )
    except (UserNotFound, IdentityProviderError, CodeInvalid, IdentityRequestInvalid):
        _count_failure(request)
        context = {
            "email": email,
            "error": "The code is wrong or has expired.",
            "emulator": emulator(request),
        }
        return await render(request, "auth/confirm.html", context, status=400)
    see_other("/signin", email=email, notice="signed-up")


# --- forgotten password ---------------------------------------------------------------------------
async def forgot_form(request: web.Request) -> web.Response:
    return await render(request, "auth/forgot.html", {"email": request.query.get("email", "")})


async def forgot(request: web.Request) -> web.Response:
    """The same answer whether or not the address has an account (as the API's forgot-password)."""
    form = await request.post()
    email = _field(form, "email")
    security = request.app[SECURITY]
    _count_failure(request)  # every request mails a code: limited like a failure
    pool = await security.user_pool()
    code = None
    try:
        sent = await cognito.forgot_password(
            security.cognito, app_client_id=pool.app_client_id, username=email
        )
        code = sent.emulator_code
    except (UserNotFound, IdentityRequestInvalid):
        pass
    context = {
        "email": email,
        "destination": mask_email(email),
        "emulator_code": code,
        "error": None,
        "emulator": emulator(request),
    }
    return await render(request, "auth/reset.html", context)


async def reset(request: web.Request) -> web.Response:
    form = await request.post()
    email, code = _field(form, "email"), _field(form, "code")
    password, repeat = _field(form, "password"), _field(form, "password_again")
    security = request.app[SECURITY]

    async def again(error: str) -> web.Response:
        context = {
            "email": email,
            "destination": mask_email(email),
            "emulator_code": None,
            "error": error,
            "emulator": emulator(request),
        }
        return await render(request, "auth/reset.html", context, status=400)

    if password != repeat:
        return await again("The two passwords differ.")
    pool = await security.user_pool()
    try:
        await cognito.reset_password(
            security.cognito,
            app_client_id=pool.app_client_id,
            username=email,
            code=code,
            new_password=password,
        )
    except (PasswordPolicy, IdentityRequestInvalid) as exc:
        return await again(str(exc))
    except (UserNotFound, IdentityProviderError, CodeInvalid):
        _count_failure(request)
        return await again("The code is wrong or has expired.")
    see_other("/signin", email=email, notice="password-reset")
