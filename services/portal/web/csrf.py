"""CSRF protection for the pages: every form and every script request that changes something carries a
token bound to the browser. The browser holds a random value in an HttpOnly, SameSite=Strict cookie; the
token is HMAC-SHA256(portal secret, that value), so a page of another site can neither read nor make one.
Signing in replaces the cookie (no token from before the sign-in stays valid). A request with an Origin
header must also come from the portal's own origin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from aiohttp import web

CSRF_COOKIE = "stamen_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_SECRET = web.AppKey("csrf_secret", bytes)
_NEW_VALUE = web.RequestKey("csrf_new_value", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Exception):
    """The form's token is missing or wrong (an old page, or another site posting): 403 CSRF_TOKEN_INVALID."""

    code = "CSRF_TOKEN_INVALID"


def _sign(secret: bytes, value: str) -> str:
    digest = hmac.new(secret, value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def browser_value(request: web.Request) -> str:
    """This browser's CSRF cookie value; a new one (set on the response by `remember`) when it has none."""
    value = request.get(_NEW_VALUE) or request.cookies.get(CSRF_COOKIE)
    if not value or len(value) > 100:
        value = secrets.token_urlsafe(32)
        request[_NEW_VALUE] = value
    return value


def renew(request: web.Request) -> None:
    """A new cookie value (at sign-in and sign-out), so tokens from before stop working."""
    request[_NEW_VALUE] = secrets.token_urlsafe(32)


def token(request: web.Request) -> str:
    return _sign(request.app[CSRF_SECRET], browser_value(request))


def remember(request: web.Request, response: web.StreamResponse, *, secure: bool) -> None:
    """Set the cookie when this request made (or renewed) the browser's value."""
    value = request.get(_NEW_VALUE)
    if value and not response.prepared:
        response.set_cookie(CSRF_COOKIE, value, path="/", httponly=True, secure=secure, samesite="Strict")


async def check(request: web.Request, *, https: bool) -> None:
    """Raise CsrfRefused unless an unsafe request carries this browser's token (form field or header)."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{'https' if https else request.scheme}://{request.host}":
        raise CsrfRefused(f"a form from {origin} cannot change anything here")
    value = request.cookies.get(CSRF_COOKIE)
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        field = (await request.post()).get(CSRF_FIELD)
        presented = field if isinstance(field, str) else None
    if (
        not value
        or not presented
        or not hmac.compare_digest(presented, _sign(request.app[CSRF_SECRET], value))
    ):
        raise CsrfRefused(
            "this form has expired or did not come from this portal; reload the page and try again"
        )
