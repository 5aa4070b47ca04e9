"""URL table of the portal."""

from __future__ import annotations

from aiohttp import web

from services.portal import views


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", views.dashboard, name="dashboard")
    app.router.add_get("/worksets/{workset_id}", views.workset_detail, name="workset_detail")
