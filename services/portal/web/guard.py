"""The pages' middlewares: security headers on every response, and for every page request who is calling
(session cookie, or the API's credentials), whether they may open the page, the CSRF check, and error pages.

Who sees what is not decided here: handlers use the API's rules (services.portal.api.access: `can_see`,
`tenant_for`, `visible_filter`) with the principal this middleware finds, exactly as API handlers do."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from services.portal.api.access import PRINCIPAL
from services.portal.api.context import SECURITY
from services.portal.api.errors import API_PREFIX, ApiError
from services.portal.api.middleware import API_KEY_HEADER, credentials_principal
from services.portal.web import csrf, sessions
from services.portal.web.assets import STATIC_PREFIX
from services.portal.web.render import render
from stamen.auth import local_demo_principal
from stamen.auth.errors import Forbidden
from stamen.errors import CodedError

log = structlog.get_logger(__name__)

PageAccess = Literal["public", "user", "operator"]
PAGE_ACCESS = web.AppKey("page_access", dict[str, PageAccess])
CSP = web.AppKey("content_security_policy", str)
SIGNED_IN = sessions.SIGNED_IN_KEY
BY_HEADER = web.RequestKey("by_header", bool)  # credentials came in a header: no cookie, so no CSRF
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_ERROR_TITLES = {
    400: "That request could not be read",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "That cannot be done now",
    413: "Too large",
    429: "Too many requests",
    500: "Something went wrong",
    502: "A service stamen depends on failed",
    503: "Not available right now",
}


class SignInRequired(Exception):
    pass


def content_security_policy(s3_origin: str) -> str:
    """No inline script or style anywhere; scripts, styles and fonts from the portal only; uploads go
    straight to S3 (presigned POST), so its origin is the one other place pages may send data."""
    connect = " ".join(dict.fromkeys(["'self'", *s3_origin.split()]))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        _harden(request, response)
    return response


def _harden(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if (response.content_type or "").startswith("text/html"):
        response.headers["Content-Security-Policy"] = request.app[CSP]
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.path.startswith(API_PREFIX)
        or request.path in _OPEN_PATHS
        or request.path.startswith(STATIC_PREFIX)
    ):
        return await handler(request)
    https = sessions.is_https(request, request.app[SECURITY].portal)
    try:
        await _identify(request)
        if not request.get(BY_HEADER):
            await csrf.check(request, https=https)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect
            response = web.Response(status=exc.status, headers=exc.headers)
        else:
            response = await error_page(request, exc.status, exc.text or "")
    except SignInRequired:
        response = _to_sign_in(request)
    except csrf.CsrfRefused as exc:
        response = await error_page(request, 403, str(exc), code=exc.code)
    except ApiError as exc:
        response = await error_page(request, exc.status, str(exc), code=exc.code)
    except CodedError as exc:
        response = await error_page(request, exc.http_status, str(exc), code=exc.code)
    except Exception:
        log.exception("portal.page_error", path=request.path, method=request.method)
        response = await error_page(request, 500, "The page could not be shown; the error was logged.")
    csrf.remember(request, response, secure=https)
    return response


async def _identify(request: web.Request) -> None:
    """Set the principal (when there is one) and enforce the page's access level."""
    security = request.app[SECURITY]
    access = _access(request)
    if not security.auth.auth_enabled:
        request[PRINCIPAL] = local_demo_principal()
    elif (signed_in := await sessions.resolve(request)) is not None:
        request[PRINCIPAL] = signed_in.principal
        request[SIGNED_IN] = signed_in
    elif request.headers.get("Authorization") or request.headers.get(API_KEY_HEADER):
        request[PRINCIPAL] = await credentials_principal(request, security)
        request[BY_HEADER] = True
    if access == "public":
        return
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise SignInRequired
    if access == "operator" and not principal.is_operator:
        raise Forbidden("this page is for operators")


def _access(request: web.Request) -> PageAccess:
    if request.match_info.http_exception is not None:
        return "public"  # the router's 404/405, shown as an error page
    name = request.match_info.route.name or ""
    return request.app[PAGE_ACCESS].get(name, "user")


def _to_sign_in(request: web.Request) -> web.Response:
    target = "/signin?next=" + quote(request.path_qs, safe="")
    if request.headers.get("HX-Request"):
        return web.Response(status=401, headers={"HX-Redirect": target})
    if request.path == "/live":
        return web.Response(status=401, text="sign in first")
    return web.Response(status=303, headers={"Location": target})


async def error_page(
    request: web.Request, status: int, message: str, *, code: str | None = None
) -> web.Response:
    if request.headers.get("HX-Request"):  # a fragment request: the message goes into the page's notice area
        return web.Response(status=status, text=message or _ERROR_TITLES.get(status, "Error"))
    return await render(
        request,
        "error.html",
        {"status": status, "title": _ERROR_TITLES.get(status, "Error"), "message": message, "code": code},
        status=status,
    )
