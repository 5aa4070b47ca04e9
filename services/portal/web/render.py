"""Rendering pages: the template context every page has (who is calling, CSRF token, theme, navigation,
the notice after a redirect) and small helpers for handlers."""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from services.portal.api.access import PRINCIPAL
from services.portal.api.context import SECURITY
from services.portal.web import csrf
from services.portal.web.live import LIVE_FROM
from services.portal.web.sessions import SIGNED_IN_KEY
from stamen.auth import Principal

THEME_COOKIE = "stamen_theme"
THEMES = ("auto", "light", "dark")

# What a page says after a redirect (?notice=...): fixed texts, so a link cannot put words on the page.
NOTICES = {
    "cancel-requested": "Cancellation requested: the workset stops at the next safe point.",
    "cancelled": "Workset cancelled.",
    "retried": "Workset queued again.",
    "archived": "Workset archived.",
    "submitted": "Workset submitted: it is being validated now.",
    "signed-out": "You are signed out.",
    "signed-up": "Account confirmed. Sign in with your e-mail address and password.",
    "confirm-sent": "Check your e-mail for the confirmation code.",
    "password-reset": "Password changed. Sign in with the new password.",
    "key-revoked": "API key revoked.",
    "credential-revoked": "NATS credential revoked.",
    "invitation-revoked": "Invitation withdrawn.",
    "notifications-saved": "Notification preferences saved.",
    "file-deleted": "File deleted.",
    "uploaded": "Upload complete.",
    "cluster-drained": "Cluster draining: running worksets finish, no new ones start there.",
    "cluster-activated": "Cluster active again.",
    "cluster-saved": "Cluster saved.",
    "dlq-requeued": "Dead letter requeued.",
    "dlq-purged": "Dead letter purged (the workset is archived).",
    "customer-saved": "Customer saved.",
    "customer-onboarded": "Customer onboarded.",
    "region-failover": "Failover forced: the region takes no new worksets and its running worksets move elsewhere.",
    "region-failback": "Fail-back done: the region's health is decided by its probes again.",
    "bulk-done": "Bulk action done; see the results below.",
}


def nav_for(principal: Principal | None) -> list[tuple[str, str]]:
    if principal is None:
        return []
    items = [
        ("/", "Dashboard"),
        ("/worksets", "Worksets"),
        ("/worksets/new", "New workset"),
        ("/generator", "YAML generator"),
        ("/files", "Files"),
        ("/usage", "Usage"),
        ("/settings", "Settings"),
    ]
    return items


OPERATOR_NAV = [
    ("/ops/customers", "Customers"),
    ("/ops/clusters", "Clusters"),
    ("/ops/regions", "Regions"),
    ("/ops/dlq", "Dead letters"),
    ("/ops/health", "Health"),
]


async def page_context(request: web.Request) -> dict[str, Any]:
    principal: Principal | None = request.get(PRINCIPAL)
    security = request.app[SECURITY]
    theme = request.cookies.get(THEME_COOKIE, "auto")
    return {
        "principal": principal,
        "local_demo": not security.auth.auth_enabled,
        "csrf_token": lambda: csrf.token(request),
        "csrf_field": csrf.CSRF_FIELD,
        "theme": theme if theme in THEMES else "auto",
        "nav": nav_for(principal),
        "operator_nav": OPERATOR_NAV if principal is not None and principal.is_operator else [],
        "notice": NOTICES.get(request.query.get("notice", "")),
        "path": request.path,
        "live_from": request.get(LIVE_FROM),
        "user_label": _user_label(principal, not security.auth.auth_enabled, request),
    }


def _user_label(principal: Principal | None, local_demo: bool, request: web.Request) -> str:
    if principal is None:
        return ""
    if local_demo:
        return "local demo (operator)"
    signed_in = request.get(SIGNED_IN_KEY)
    who = (signed_in.row.username if signed_in else None) or principal.username or principal.subject
    return f"{who} · operator" if principal.is_operator else f"{who} · {principal.customer_id}"


async def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """Every page's context (page_context) with the handler's on top; rendered here rather than by
    aiohttp-jinja2's context middleware, so error pages made outside the handlers have it too."""
    return aiohttp_jinja2.render_template(
        template, request, {**await page_context(request), **context}, status=status
    )


def see_other(path: str, *, notice: str | None = None, **query: str) -> NoReturn:
    """Redirect after a form (303), optionally with a notice from NOTICES."""
    params = {**query, **({"notice": notice} if notice else {})}
    raise web.HTTPSeeOther(path + ("?" + urlencode(params) if params else ""))


def safe_next(target: str | None, default: str = "/") -> str:
    """A post-sign-in target: only a path of this portal (no scheme, no //host), else `default`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
