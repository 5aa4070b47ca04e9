"""Portal pages: read-only, scoped to the caller like the API (operators see every tenant). With auth off
(local demo) every request is an operator and base.html shows a banner saying so."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from services.portal.api.access import can_see, principal_of
from stamen.service.keys import POOL
from stamen.store.errors import WorksetNotFound
from stamen.store.unit_of_work import UnitOfWork


@aiohttp_jinja2.template("dashboard.html")
async def dashboard(request: web.Request) -> dict[str, Any]:
    tenant = principal_of(request).visible_tenant()
    async with UnitOfWork(request.app[POOL]) as uow:
        worksets = await uow.worksets.list_for_tenant(tenant, limit=100)
        counts = await uow.worksets.count_by_state() if tenant is None else None
    if counts is None:
        counts = {}
        for ws in worksets:
            counts[ws.state.value] = counts.get(ws.state.value, 0) + 1
    return {"counts": sorted(counts.items()), "worksets": worksets}


@aiohttp_jinja2.template("workset.html")
async def workset_detail(request: web.Request) -> dict[str, Any]:
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        try:
            ws = await uow.worksets.get(workset_id)
        except WorksetNotFound:
            raise web.HTTPNotFound(text=f"no workset {workset_id}") from None
        if not can_see(request, ws.tenant_id):
            raise web.HTTPNotFound(text=f"no workset {workset_id}")
        history = await uow.worksets.history(workset_id)
    return {"ws": ws, "history": history}
