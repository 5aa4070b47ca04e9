"""Portal wiring: the shared service parts, Jinja2 templates, the pages and the JSON API."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from services.portal.api.errors import api_errors
from services.portal.api.routes import setup_api_routes
from services.portal.routes import setup_routes
from stamen.inputs.contexts import add_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.runner import base_app
from stamen.settings import Settings


def init_app(settings: Settings, *, intake: IntakeSettings | None = None) -> web.Application:
    app = base_app("portal", settings)
    app.middlewares.append(api_errors)
    # S3 for the validate endpoint's storage checks and for S3 event pick-ups.
    add_object_store(app, intake or IntakeSettings())
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("services.portal", "templates"), autoescape=True)
    setup_routes(app)
    setup_api_routes(app)
    return app
