"""The portal's web pages (server-rendered with aiohttp-jinja2, progressively enhanced with htmx and small
scripts of stamen's own): `setup_web` wires templates, assets, sessions, the live event stream and the
page routes onto the portal application. See docs/portal.md."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web

from services.portal.api.context import SECURITY
from services.portal.web import formatting, live
from services.portal.web.assets import ASSETS, Assets
from services.portal.web.csrf import CSRF_SECRET
from services.portal.web.guard import CSP, content_security_policy
from services.portal.web.routes import setup_page_routes
from services.portal.web.specform import field_id
from services.portal.web.views.dashboard import AGGREGATES, AggregateCache
from stamen.service.keys import SETTINGS


def setup_web(app: web.Application) -> None:
    assets = Assets.load()
    app[ASSETS] = assets
    secret = app[SECURITY].portal.portal_secret
    app[CSRF_SECRET] = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
    app[CSP] = content_security_policy(s3_origins(app[SETTINGS].aws_endpoint_url, app[SETTINGS].aws_region))
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("services.portal.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["asset"] = assets.url
    env.globals["field_id"] = field_id
    formatting.install(env)
    live.setup_live(app)
    app[AGGREGATES] = AggregateCache()
    setup_page_routes(app)


def s3_origins(endpoint_url: str | None, region: str) -> str:
    """Where browsers upload to (presigned POST): the S3 endpoint stamen uses, or AWS's S3 hosts."""
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        return f"{parts.scheme}://{parts.netloc}"
    return f"https://*.s3.amazonaws.com https://*.s3.{region}.amazonaws.com"
