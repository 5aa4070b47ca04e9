"""Operations endpoints: clusters (list; add, drain, activate, remove for operators), the dead-letter
queue (list, inspect with every attempt, requeue with changes, purge), parked outbox events (list, retry)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import (
    actor_of,
    body,
    principal_of,
    query,
    reply,
    require_operator,
    visible_filter,
)
from services.portal.api.errors import ApiError
from services.portal.api.worksets import dead_letter_out, detail, requeue, requeue_changes
from stamen import commands
from stamen.customers.repository import CustomerRepository, UsageRepository
from stamen.domain.clusters import ClusterStatus
from stamen.service.keys import POOL
from stamen.store.clusters import ClusterRecord
from stamen.store.errors import WorksetNotFound
from stamen.store.outbox import OutboxQueue
from stamen.store.unit_of_work import UnitOfWork


def _bucket_of(location: str) -> str:
    """A data location is a bucket name, an s3:// URI or a region; this is the bucket part."""
    return location.removeprefix("s3://").split("/", 1)[0]


async def cluster_outs(uow: UnitOfWork, viewer: str | None = None) -> list[m.ClusterOut]:
    """The registry as `viewer` may see it: None = an operator (every tenant's load); a customer sees only
    its own running worksets, and no other customer's bucket among the data locations (either would tell
    it about another tenant)."""
    clusters = await uow.clusters.clusters()
    hidden: set[str] = set()
    if viewer is None:
        running = {v.name: v.running for v in await uow.slots.cluster_views()}
    else:
        running = await UsageRepository(uow.connection).running_by_cluster(viewer)
        buckets = {_bucket_of(loc) for c in clusters for loc in c.data_locations}
        owners = await CustomerRepository(uow.connection).bucket_owners(buckets)
        hidden = {bucket for bucket, owner in owners.items() if owner != viewer}
    return [
        m.ClusterOut(
            name=c.name,
            region=c.region,
            executor=c.executor,
            max_concurrent=c.max_concurrent,
            price_factor=c.price_factor,
            status=c.status,
            running=running.get(c.name, 0),
            data_locations=[loc for loc in c.data_locations if _bucket_of(loc) not in hidden],
        )
        for c in clusters
    ]


async def list_clusters(request: web.Request) -> web.Response:
    viewer = principal_of(request).visible_tenant()
    async with UnitOfWork(request.app[POOL]) as uow:
        return reply(m.ClusterList(items=await cluster_outs(uow, viewer)))


async def _one(uow: UnitOfWork, name: str) -> m.ClusterOut:
    return next(c for c in await cluster_outs(uow) if c.name == name)


async def add_cluster(request: web.Request) -> web.Response:
    require_operator(request)
    new = await body(request, m.ClusterCreate)
    return reply(await save_cluster(request.app[POOL], new), 201)


async def save_cluster(pool: asyncpg.Pool, new: m.ClusterCreate) -> m.ClusterOut:
    """Add or update a cluster (operators: the API and the portal's Clusters page)."""
    record = ClusterRecord(
        new.name,
        new.region,
        new.executor,
        new.max_concurrent,
        new.price_factor,
        tuple(new.data_locations),
        "active",
        new.config,
    )
    async with UnitOfWork(pool) as uow:
        await uow.clusters.upsert_cluster(record)
        await uow.commit()
    async with UnitOfWork(pool) as uow:
        return await _one(uow, new.name)


async def _set_status(request: web.Request, status: ClusterStatus) -> web.Response:
    require_operator(request)
    name = request.match_info["name"]
    await commands.set_cluster_status(request.app[POOL], name, status, actor=actor_of(request))
    async with UnitOfWork(request.app[POOL]) as uow:
        return reply(await _one(uow, name))


async def drain_cluster(request: web.Request) -> web.Response:
    """Running worksets finish; no new ones are admitted there."""
    return await _set_status(request, "draining")


async def activate_cluster(request: web.Request) -> web.Response:
    """Take worksets again (after a drain)."""
    return await _set_status(request, "active")


async def remove_cluster(request: web.Request) -> web.Response:
    """Only a cluster nothing runs on can go (CLUSTER_BUSY otherwise: drain it and wait)."""
    require_operator(request)
    name = request.match_info["name"]
    async with UnitOfWork(request.app[POOL]) as uow:
        await uow.clusters.remove_cluster(name)
        await uow.commit()
    return reply(m.ClusterRemoved(name=name, removed=True))


# --- dead-letter queue (operators) -----------------------------------------------------------------
async def list_dead_letters(request: web.Request) -> web.Response:
    require_operator(request)
    tenant = visible_filter(request, query(request, m.DeadLetterQuery).tenant)
    async with UnitOfWork(request.app[POOL]) as uow:
        rows = await uow.dead_letters.list(tenant)
    return reply(m.DeadLetterList(items=[dead_letter_out(r) for r in rows]))


def _not_parked(workset_id: str) -> ApiError:
    return ApiError(404, "DEAD_LETTER_NOT_FOUND", f"workset {workset_id!r} is not in the dead-letter queue")


def _run_out(row: dict[str, Any]) -> m.RunOut:
    return m.RunOut.model_validate({k: row[k] for k in m.RunOut.model_fields})


async def inspect_dead_letter(request: web.Request) -> web.Response:
    require_operator(request)
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        row = await uow.dead_letters.get(workset_id)
        if row is None:
            raise _not_parked(workset_id)
        ws = await uow.worksets.get(workset_id)
        runs = await uow.slots.runs(workset_id)
        return reply(
            m.DeadLetterDetail(
                dead_letter=dead_letter_out(row),
                workset=await detail(uow, ws),
                runs=[_run_out(r) for r in runs],
            )
        )


async def _parked(request: web.Request) -> str:
    """The workset of the path, which must be in the dead-letter queue (else DEAD_LETTER_NOT_FOUND)."""
    require_operator(request)
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        if await uow.dead_letters.get(workset_id) is None:
            raise _not_parked(workset_id)
    return workset_id


async def requeue_dead_letter(request: web.Request) -> web.Response:
    """Only dead letters: a failed workset that is not parked is retried with POST /worksets/{id}/retry."""
    workset_id = await _parked(request)
    return await requeue(request, workset_id, await requeue_changes(request), missing=_not_parked)


async def purge_dead_letter(request: web.Request) -> web.Response:
    workset_id = await _parked(request)
    try:
        await commands.purge_dead_letter(request.app[POOL], workset_id, actor=actor_of(request))
    except WorksetNotFound:
        raise _not_parked(workset_id) from None
    return reply(m.WorksetStateResponse(workset_id=workset_id, state="archived"))


# --- parked outbox events (operators) ---------------------------------------------------------------
async def list_parked_events(request: web.Request) -> web.Response:
    require_operator(request)
    async with request.app[POOL].acquire() as conn:
        rows = await OutboxQueue(conn).parked()
    return reply(m.ParkedEventList(items=[m.ParkedEventOut.model_validate(r.as_dict()) for r in rows]))


async def retry_parked_events(request: web.Request) -> web.Response:
    require_operator(request)
    wanted = await body(request, m.OutboxRetryRequest)
    if not wanted.ids and not wanted.all:
        raise ApiError(
            400, "OUTBOX_RETRY_NOTHING", 'name the parked rows to retry ("ids") or send "all": true'
        )
    async with request.app[POOL].acquire() as conn:
        retried = await OutboxQueue(conn).unpark(None if wanted.all else wanted.ids)
    return reply(m.OutboxRetryResponse(retried=retried, not_parked=sorted(set(wanted.ids) - set(retried))))
