"""Region endpoints: every region's health (any caller), one region's probes and history, and the
operator's forced failover and fail-back (stamen.regions.commands, as the CLI)."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from services.portal.api import region_models as m
from services.portal.api.access import actor_of, body, principal_of, query, reply, require_operator
from stamen.regions.commands import (
    RegionNotFound,
    fail_back,
    force_failover,
)
from stamen.regions.views import overview_json
from stamen.service.keys import POOL, SETTINGS
from stamen.store.regions import RegionOverview
from stamen.store.unit_of_work import UnitOfWork


def _out(o: RegionOverview | None, region: str, configured: str, operator: bool) -> dict[str, object]:
    if o is None:  # the configured region before anything has reported on it
        o = RegionOverview(region, False, False, (), None, None)
    doc = overview_json(o)
    return {
        **doc,
        "configured": region == configured,
        "health": doc["status"],
        "reason": doc["reason"] if operator else None,
    }


async def list_regions(request: web.Request) -> web.Response:
    return reply(await regions_overview(request))


async def regions_overview(request: web.Request) -> m.RegionList:
    """The configured region, the registry's regions, the regions of registered clusters and those with a
    health report, with the health admission reads from region_health (no row: healthy). Also the portal's
    Regions page."""
    configured = request.app[SETTINGS].region
    operator = principal_of(request).is_operator
    async with UnitOfWork(request.app[POOL]) as uow:
        known = {o.region: o for o in await uow.regions.overview()}
    items = [
        m.RegionOut.model_validate(_out(known.get(r), r, configured, operator))
        for r in sorted({configured, *known})
    ]
    return m.RegionList(
        items=items,
        note="A region nothing has reported on counts as healthy (health_reported: false); a down region's "
        "clusters take no new worksets and its running worksets move elsewhere.",
    )


async def show_region(request: web.Request) -> web.Response:
    require_operator(request)
    return reply(await region_detail(request, request.match_info["region"]))


async def region_detail(request: web.Request, region: str) -> m.RegionDetail:
    """One region's probes, recent changes and audit trail (operators; also the portal's region page)."""
    async with UnitOfWork(request.app[POOL]) as uow:
        found = next((o for o in await uow.regions.overview() if o.region == region), None)
        if found is None:
            raise RegionNotFound(f"no region named {region!r}; see GET /api/v1/regions", region=region)
        history = await uow.regions.history(region, limit=20)
        operations = await uow.regions.operations(region, limit=20)
    doc = _out(found, region, request.app[SETTINGS].region, True)
    probes = [
        {"kind": p["kind"], "target": p["target"], "ok": p["ok"], "latency_ms": p["latency_ms"],
         "detail": p["detail"], "facts": {k: v for k, v in p.items() if k not in m.ProbeOut.model_fields}}
        for p in found.health.probes
    ] if found.health else []  # fmt: skip
    return m.RegionDetail.model_validate(
        {
            **doc,
            "probes": probes,
            "history": [asdict(h) for h in history],
            "operations": [asdict(o) for o in operations],
        }
    )


async def region_history(request: web.Request) -> web.Response:
    require_operator(request)
    region = request.match_info["region"]
    limit = query(request, m.RegionHistoryQuery).limit
    async with UnitOfWork(request.app[POOL]) as uow:
        if region not in {o.region for o in await uow.regions.overview()}:
            raise RegionNotFound(f"no region named {region!r}; see GET /api/v1/regions", region=region)
        changes = await uow.regions.history(region, limit=limit)
        operations = await uow.regions.operations(region, limit=limit)
    return reply(
        m.RegionHistory.model_validate(
            {"changes": [asdict(h) for h in changes], "operations": [asdict(o) for o in operations]}
        )
    )


async def failover(request: web.Request) -> web.Response:
    require_operator(request)
    region = request.match_info["region"]
    req = await body(request, m.FailoverRequest)
    result = await force_failover(request.app[POOL], region, actor=actor_of(request), reason=req.reason)
    return reply(m.RegionCommandOut.model_validate(asdict(result)))


async def failback(request: web.Request) -> web.Response:
    require_operator(request)
    region = request.match_info["region"]
    req = await body(request, m.FailbackRequest)
    result = await fail_back(
        request.app[POOL], region, actor=actor_of(request), reason=req.reason, database=req.database
    )
    return reply(m.RegionCommandOut.model_validate(asdict(result)))
