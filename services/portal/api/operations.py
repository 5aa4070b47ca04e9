"""Operations endpoints: clusters (list; add and drain for operators), regions, the dead-letter queue."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import actor_of, body, query, reply, require_operator, visible_filter
from services.portal.api.errors import ApiError
from services.portal.api.worksets import detail
from stamen import commands
from stamen.service.keys import POOL, SETTINGS
from stamen.store.errors import ConcurrencyConflict, WorksetNotFound
from stamen.store.scheduling import ClusterNotFound, ClusterRecord
from stamen.store.unit_of_work import UnitOfWork


async def _cluster_outs(uow: UnitOfWork) -> list[m.ClusterOut]:
    running = {v.name: v.running for v in await uow.scheduling.cluster_views()}
    return [m.ClusterOut(name=c.name, region=c.region, executor=c.executor, max_concurrent=c.max_concurrent,
                         price_factor=c.price_factor, data_locations=list(c.data_locations), status=c.status,
                         running=running.get(c.name, 0)) for c in await uow.scheduling.clusters()]


async def list_clusters(request: web.Request) -> web.Response:
    async with UnitOfWork(request.app[POOL]) as uow:
        return reply(m.ClusterList(items=await _cluster_outs(uow)))


async def _one(uow: UnitOfWork, name: str) -> m.ClusterOut:
    return next(c for c in await _cluster_outs(uow) if c.name == name)


async def add_cluster(request: web.Request) -> web.Response:
    require_operator(request)
    new = await body(request, m.ClusterCreate)
    record = ClusterRecord(new.name, new.region, new.executor, new.max_concurrent, new.price_factor,
                           tuple(new.data_locations), "active", new.config)
    async with UnitOfWork(request.app[POOL]) as uow:
        await uow.scheduling.upsert_cluster(record)
        await uow.commit()
    async with UnitOfWork(request.app[POOL]) as uow:
        return reply(await _one(uow, new.name), 201)


async def drain_cluster(request: web.Request) -> web.Response:
    require_operator(request)
    name = request.match_info["name"]
    async with UnitOfWork(request.app[POOL]) as uow:
        try:
            await uow.scheduling.set_cluster_status(name, "draining")
        except ClusterNotFound as exc:
            raise ApiError(404, exc.code, str(exc)) from None
        await uow.commit()
    async with UnitOfWork(request.app[POOL]) as uow:
        return reply(await _one(uow, name))


async def list_regions(request: web.Request) -> web.Response:
    configured = request.app[SETTINGS].region
    async with UnitOfWork(request.app[POOL]) as uow:
        clusters = await uow.scheduling.clusters()
    regions: dict[str, list[str]] = {configured: []}
    for c in clusters:
        regions.setdefault(c.region, []).append(c.name)
    items = [m.RegionOut(region=r, configured=r == configured, clusters=sorted(names), health="unknown")
             for r, names in sorted(regions.items())]
    return reply(m.RegionList(items=items, note="Regions known from the configuration and the cluster registry. "
                              "Region health checks are not built: health is always 'unknown'."))


# --- dead-letter queue (operators) -----------------------------------------------------------------
def _dead_letter(row: dict[str, Any]) -> m.DeadLetterOut:
    return m.DeadLetterOut.model_validate({k: row[k] for k in m.DeadLetterOut.model_fields})


async def list_dead_letters(request: web.Request) -> web.Response:
    require_operator(request)
    tenant = visible_filter(request, query(request, m.DeadLetterQuery).tenant)
    async with UnitOfWork(request.app[POOL]) as uow:
        rows = await uow.dead_letters.list(tenant)
    return reply(m.DeadLetterList(items=[_dead_letter(r) for r in rows]))


def _not_parked(workset_id: str) -> ApiError:
    return ApiError(404, "DEAD_LETTER_NOT_FOUND", f"workset {workset_id!r} is not in the dead-letter queue")


async def inspect_dead_letter(request: web.Request) -> web.Response:
    require_operator(request)
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        row = await uow.dead_letters.get(workset_id)
        if row is None:
            raise _not_parked(workset_id)
        ws = await uow.worksets.get(workset_id)
        return reply(m.DeadLetterDetail(dead_letter=_dead_letter(row), workset=await detail(uow, ws)))


async def _run(request: web.Request, action: str) -> web.Response:
    require_operator(request)
    workset_id = request.match_info["workset_id"]
    actor = actor_of(request)
    try:
        if action == "requeue":
            state = await commands.requeue(request.app[POOL], workset_id, actor=actor)
        else:
            await commands.purge_dead_letter(request.app[POOL], workset_id, actor=actor)
            state = "archived"
    except WorksetNotFound:
        raise _not_parked(workset_id) from None
    except commands.WorksetNotRequeueable as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    except ConcurrencyConflict as exc:
        raise ApiError(409, "WORKSET_CONCURRENT_UPDATE", str(exc)) from None
    return reply(m.WorksetStateResponse(workset_id=workset_id, state=state))


async def requeue_dead_letter(request: web.Request) -> web.Response:
    return await _run(request, "requeue")


async def purge_dead_letter(request: web.Request) -> web.Response:
    return await _run(request, "purge")
