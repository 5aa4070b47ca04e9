"""Portal pages. Read-only for now: sign-in and tenant scoping come with issue 6, so the portal
listens on loopback in the embedded stack and says on every page that it is in local demo mode."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from stamen.service.keys import POOL
from stamen.store.errors import WorksetNotFound
from stamen.store.unit_of_work import UnitOfWork


@aiohttp_jinja2.template("dashboard.html")
async def dashboard(request: web.Request) -> dict[str, Any]:
    async with UnitOfWork(request.app[POOL]) as uow:
        counts = await uow.worksets.count_by_state()
        worksets = await uow.worksets.list_for_tenant(None, limit=100)
    return {"counts": sorted(counts.items()), "worksets": worksets}


@aiohttp_jinja2.template("workset.html")
async def workset_detail(request: web.Request) -> dict[str, Any]:
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        try:
            ws = await uow.worksets.get(workset_id)
        except WorksetNotFound:
            raise web.HTTPNotFound(text=f"no workset {workset_id}") from None
        history = await uow.worksets.history(workset_id)
    return {"ws": ws, "history": history}
