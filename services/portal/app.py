"""Portal wiring: the shared service parts, Jinja2 templates, and the page routes."""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web
from stamen.service.runner import base_app
from stamen.settings import Settings

from services.portal.routes import setup_routes


def init_app(settings: Settings) -> web.Application:
    app = base_app("portal", settings)
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("services.portal", "templates"), autoescape=True)
    setup_routes(app)
    return app
