"""Authentication and per-principal rate limiting, as aiohttp middlewares.

Credentials: `Authorization: Bearer <Cognito JWT>`, `Authorization: Bearer stm_...` or `X-Api-Key: stm_...`.
Each route's access level comes from the route table (registry); the portal's pages have their own guard
(web/guard.py: session cookie or these same credentials); /healthz, /readyz, /metrics and unknown paths
(their 404/405) need none. With STAMEN_AUTH_ENABLED=false
(local demo) every request is `local_demo_principal()`.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from services.portal.api.access import PRINCIPAL
from services.portal.api.context import SECURITY, Security
from services.portal.api.errors import coded_error_response
from services.portal.api.registry import Access
from services.portal.api.requests import IDEMPOTENCY_HEADER, TENANT_HEADER
from services.portal.api.text import require_storable
from stamen.auth import Principal, local_demo_principal
from stamen.auth.errors import AuthError, Forbidden, TokenMissing, TokenRevoked

API_KEY_HEADER = "X-Api-Key"
EVENTS_SECRET_HEADER = "X-Stamen-Events-Secret"
ACCESS = web.AppKey("route_access", dict[str, Access])  # route name -> access level
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# The headers the API reads. Others are not checked: a client's odd User-Agent is none of our business.
_READ_HEADERS = ("Authorization", API_KEY_HEADER, EVENTS_SECRET_HEADER, TENANT_HEADER, IDEMPOTENCY_HEADER)


def access_of(request: web.Request) -> Access:
    match = request.match_info
    if match.http_exception is not None or request.path in _OPEN_PATHS:
        return "public"  # let the router answer 404/405; health and metrics are open
    name = match.route.name
    return request.app[ACCESS].get(name or "", "principal")


async def credentials_principal(request: web.Request, security: Security) -> Principal:
    auth = request.headers.get("Authorization", "")
    api_key = request.headers.get(API_KEY_HEADER, "").strip()
    token = ""
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            raise TokenMissing("use Authorization: Bearer <token or API key>")
        token = token.strip()
    if token.startswith("stm_") or (not token and api_key):
        assert security.keys is not None
        return await security.keys.authenticate(token or api_key)
    if not token:
        raise TokenMissing("authentication required: Authorization: Bearer <token> or X-Api-Key")
    principal = await (await security.verifier()).verify(token)
    if security.signed_out(token):
        raise TokenRevoked("this token was signed out (POST /api/v1/auth/logout); sign in again")
    return principal


def events_secret_ok(request: web.Request, security: Security) -> bool:
    secret = security.portal.s3_events_secret
    presented = request.headers.get(EVENTS_SECRET_HEADER)
    if secret is None or not secret.get_secret_value() or presented is None:
        return False
    return hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())


@web.middleware
async def storable_text(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Path parameters and the headers the API reads, checked before anything uses them (query values and
    bodies are checked where they are parsed: access.query, access.body, the workset and S3 event bodies).
    Runs inside api_errors, so its refusal is the usual JSON error."""
    if request.path.startswith("/api/"):
        require_storable(dict(request.match_info), "path")
        require_storable({h: v for h in _READ_HEADERS if (v := request.headers.get(h)) is not None}, "header")
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)  # pages: the web guard (services/portal/web/guard.py)
    access = access_of(request)
    security = request.app[SECURITY]
    if access == "public":
        return await handler(request)
    if not security.auth.auth_enabled:
        request[PRINCIPAL] = local_demo_principal()
        return await handler(request)
    if access == "events" and events_secret_ok(request, security):
        return await handler(request)
    try:
        principal = await credentials_principal(request, security)
    except AuthError as exc:
        try:  # failed attempts count against the caller's address, so guessing keys is rate limited too
            security.limiter.enforce(f"anonymous:{request.remote}")
        except AuthError as limited:
            return coded_error_response(limited)
        return coded_error_response(exc)
    if access in ("operator", "events") and not principal.is_operator:
        return coded_error_response(_forbidden(access))
    request[PRINCIPAL] = principal
    return await handler(request)


def _forbidden(access: Access) -> AuthError:
    what = "the S3 event secret header or an operator" if access == "events" else "an operator"
    return Forbidden(f"this endpoint needs {what}")


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One token bucket per principal (anonymous callers of public API routes: per client address)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    principal: Principal | None = request.get(PRINCIPAL)
    key = principal.rate_limit_key if principal is not None else f"anonymous:{request.remote}"
    try:
        request.app[SECURITY].limiter.enforce(key)
    except AuthError as exc:
        return coded_error_response(exc)
    return await handler(request)
