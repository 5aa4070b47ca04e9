"""Portal wiring, as a table of contents: the shared service parts, security, templates, pages and API.

Middlewares, outermost first: JSON errors under /api/, text the database cannot store in path parameters
and headers (TEXT_NOT_STORABLE), authentication (api/middleware.py; the route table in api/routes.py says
which routes are public or operator-only), per-principal rate limiting."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from services.portal.api import protocol
from services.portal.api.context import SECURITY, add_security
from services.portal.api.errors import api_errors
from services.portal.api.middleware import authenticate, rate_limit, storable_text
from services.portal.api.notifications import add_notifications
from services.portal.api.routes import setup_api_routes
from services.portal.routes import setup_routes
from services.portal.settings import PortalSettings
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
    app.middlewares.extend([api_errors, storable_text, authenticate, rate_limit])
    # S3 for the validate endpoint's storage checks and for S3 event pick-ups.
    add_object_store(app, intake or IntakeSettings())
    # Auth settings, API keys, rate limiter, Cognito and S3 clients (quotas, usage).
    add_security(app, auth, portal, customers)
    # Notification preferences: the secret store and SNS client they need.
    add_notifications(app)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("services.portal", "templates"),
        autoescape=True,
        context_processors=[_auth_banner],
    )
    setup_routes(app)
    setup_api_routes(app)
    return app


async def _auth_banner(request: web.Request) -> dict[str, object]:
    """Pages say when auth is off (local demo), and only then."""
    return {"local_demo": not request.app[SECURITY].auth.auth_enabled}
