"""URL table of the JSON API."""

from __future__ import annotations

from aiohttp import web

from services.portal.api import s3_events, worksets

PREFIX = "/api/v1"


def setup_api_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/worksets", worksets.submit, name="api_submit")
    app.router.add_post(f"{PREFIX}/worksets/validate", worksets.validate, name="api_validate")
    app.router.add_post(f"{PREFIX}/worksets/generate-yaml", worksets.generate_yaml, name="api_generate_yaml")
    app.router.add_get(f"{PREFIX}/worksets/{{workset_id}}", worksets.show, name="api_workset")
    app.router.add_get(f"{PREFIX}/schema", worksets.schema, name="api_schema")
    app.router.add_post(f"{PREFIX}/s3-events", s3_events.s3_events, name="api_s3_events")
