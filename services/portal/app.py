"""Portal wiring, as a table of contents: the shared service parts, security, the web pages and the API.

Middlewares, outermost first: security headers on every response, JSON errors under /api/, text the
database cannot store in path parameters and headers (TEXT_NOT_STORABLE), the pages' guard (session,
access level, CSRF, error pages; web/guard.py), API authentication (api/middleware.py; the route table in
api/routes.py says which routes are public or operator-only), per-principal rate limiting."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import protocol
from services.portal.api.context import add_security
from services.portal.api.errors import api_errors
from services.portal.api.middleware import authenticate, rate_limit, storable_text
from services.portal.api.notifications import add_notifications
from services.portal.api.routes import setup_api_routes
from services.portal.settings import PortalSettings
from services.portal.web import setup_web
from services.portal.web.guard import pages, security_headers
from stamen.auth import AuthSettings
from stamen.customers.settings import CustomerSettings
from stamen.inputs.contexts import add_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.runner import base_app
from stamen.settings import Settings


def init_app(
    settings: Settings,
    *,
    intake: IntakeSettings | None = None,
    auth: AuthSettings | None = None,
    portal: PortalSettings | None = None,
    customers: CustomerSettings | None = None,
) -> web.Application:
    protocol.install()  # malformed HTTP answered as API JSON errors, without echo
    app = base_app("portal", settings)
    app.middlewares.extend([security_headers, api_errors, storable_text, pages, authenticate, rate_limit])
    # S3 for the validate endpoint's storage checks and for S3 event pick-ups.
    add_object_store(app, intake or IntakeSettings())
    # Auth settings, API keys, rate limiter, Cognito and S3 clients (quotas, usage).
    add_security(app, auth, portal, customers)
    # Notification preferences: the secret store and SNS client they need.
    add_notifications(app)
    # Pages: templates, static assets, sessions, live events (web/).
    setup_web(app)
    setup_api_routes(app)
    return app
