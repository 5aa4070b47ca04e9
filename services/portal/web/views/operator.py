"""Operator pages: customers (onboard, suspend / activate, concurrency limit), clusters (add, drain,
activate, remove), regions and their health, the dead-letter queue (inspect, requeue with changes, purge)
and the health of each service (bus consumers, outbox, dead letters, the services' readiness)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from services.portal.api import models as m
from services.portal.api.access import actor_of
from services.portal.api.context import SECURITY
from services.portal.api.errors import ApiError
from services.portal.api.operations import cluster_outs, save_cluster
from services.portal.api.regions import region_detail, regions_overview
from services.portal.api.worksets import detail as detail_model
from services.portal.web.render import render, see_other
from services.portal.web.views.detail import requeue_changes
from stamen import commands
from stamen.bus.subjects import DLQ_STREAM, EVENTS_STREAM
from stamen.customers import AsyncCustomerManager
from stamen.customers.limits import set_tenant_limit
from stamen.customers.model import MAX_CONCURRENT_WORKSETS, SETTABLE_STATUSES
from stamen.customers.repository import CustomerRepository
from stamen.regions.commands import (
    NothingToFailBack,
    RegionAlreadyForced,
    fail_back,
    force_failover,
)
from stamen.retry import RequeueChangesInvalid
from stamen.service.keys import BUS, POOL, SETTINGS
from stamen.stack.launcher import read_stack_file
from stamen.store.unit_of_work import UnitOfWork


def _form_errors(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]


# --- customers -----------------------------------------------------------------------------------
async def _customers_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    async with UnitOfWork(request.app[POOL]) as uow:
        customers = await CustomerRepository(uow.connection).page(limit=500)
        running = await uow.slots.running_by_tenant()
    return {"customers": customers, "running": running, "errors": [], "values": {}, **extra}


async def customers(request: web.Request) -> web.Response:
    return await render(request, "ops/customers.html", await _customers_context(request))


async def onboard(request: web.Request) -> web.Response:
    form = await request.post()
    values = {k: str(v).strip() for k, v in form.items() if k != "csrf_token" and str(v).strip()}
    try:
        new = m.CustomerCreate.model_validate(values)
    except ValidationError as exc:
        context = await _customers_context(request, errors=_form_errors(exc), values=values)
        return await render(request, "ops/customers.html", context, status=400)
    manager = AsyncCustomerManager(request.app[POOL], request.app[SECURITY].customers)
    await manager.onboard_customer(**new.model_dump())
    see_other("/ops/customers", notice="customer-onboarded")


async def update_customer(request: web.Request) -> web.Response:
    customer_id = request.match_info["customer_id"]
    form = await request.post()
    manager = AsyncCustomerManager(request.app[POOL], request.app[SECURITY].customers)
    status = str(form.get("status", ""))
    if status in SETTABLE_STATUSES:
        await manager.set_status(customer_id, status)
    limit = str(form.get("max_concurrent_worksets", "")).strip()
    if limit:
        if not limit.isdigit() or int(limit) > MAX_CONCURRENT_WORKSETS:
            raise ApiError(
                400, "CUSTOMER_INVALID", f"max_concurrent_worksets: 0 to {MAX_CONCURRENT_WORKSETS}"
            )
        await manager.get_customer(customer_id)  # CUSTOMER_NOT_FOUND for an unknown id
        await set_tenant_limit(request.app[POOL], customer_id, int(limit))
    see_other("/ops/customers", notice="customer-saved")


# --- clusters ------------------------------------------------------------------------------------
async def _clusters_context(request: web.Request, **extra: Any) -> dict[str, Any]:
    async with UnitOfWork(request.app[POOL]) as uow:
        items = await cluster_outs(uow)
    return {"clusters": items, "errors": [], "values": {}, **extra}


async def clusters(request: web.Request) -> web.Response:
    return await render(request, "ops/clusters.html", await _clusters_context(request))


async def save_cluster_form(request: web.Request) -> web.Response:
    form = await request.post()
    values = {k: str(v).strip() for k, v in form.items() if k != "csrf_token" and str(v).strip()}
    doc: dict[str, Any] = {k: v for k, v in values.items() if k != "data_locations"}
    doc["data_locations"] = [x.strip() for x in values.get("data_locations", "").split(",") if x.strip()]
    try:
        new = m.ClusterCreate.model_validate(doc)
    except ValidationError as exc:
        context = await _clusters_context(request, errors=_form_errors(exc), values=values)
        return await render(request, "ops/clusters.html", context, status=400)
    await save_cluster(request.app[POOL], new)
    see_other("/ops/clusters", notice="cluster-saved")


async def cluster_action(request: web.Request) -> web.Response:
    name, action = request.match_info["name"], request.match_info["action"]
    async with UnitOfWork(request.app[POOL]) as uow:
        if action == "drain":
            await uow.clusters.set_cluster_status(name, "draining")
        elif action == "activate":
            await uow.clusters.set_cluster_status(name, "active")
        elif action == "remove":
            await uow.clusters.remove_cluster(name)
        else:
            raise ApiError(404, "NOT_FOUND", f"no cluster action {action!r}")
        await uow.commit()
    notice = {"drain": "cluster-drained", "activate": "cluster-activated", "remove": "cluster-saved"}[action]
    see_other("/ops/clusters", notice=notice)


# --- regions -------------------------------------------------------------------------------------
async def regions(request: web.Request) -> web.Response:
    return await render(request, "ops/regions.html", {"regions": await regions_overview(request)})


async def region(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    detail = await region_detail(request, request.match_info["region"])
    return await render(request, "ops/region.html", {"r": detail, "error": error}, status=status)


async def region_command(request: web.Request) -> web.Response:
    """A forced failover or a fail-back (stamen.regions.commands, as the CLI and the API), with its reason."""
    name, action = request.match_info["region"], request.match_info["action"]
    form = await request.post()
    reason = str(form.get("reason", "")).strip()
    if not reason or len(reason) > 2000:
        return await region(
            request,
            error="reason: say why (1 to 2,000 characters); it is kept in the audit trail",
            status=400,
        )
    try:
        if action == "failover":
            await force_failover(request.app[POOL], name, actor=actor_of(request), reason=reason)
        elif action == "failback":
            await fail_back(request.app[POOL], name, actor=actor_of(request), reason=reason, database=False)
        else:
            raise ApiError(404, "NOT_FOUND", f"no region action {action!r}")
    except (RegionAlreadyForced, NothingToFailBack) as exc:
        return await region(request, error=str(exc), status=409)
    see_other(f"/ops/regions/{name}", notice="region-" + action)


# --- dead letters --------------------------------------------------------------------------------
async def dead_letters(request: web.Request) -> web.Response:
    tenant = request.query.get("tenant") or None
    async with UnitOfWork(request.app[POOL]) as uow:
        rows = await uow.dead_letters.list(tenant)
    return await render(request, "ops/dlq.html", {"rows": rows, "tenant": tenant})


async def _parked(request: web.Request) -> str:
    workset_id = request.match_info["workset_id"]
    async with UnitOfWork(request.app[POOL]) as uow:
        if await uow.dead_letters.get(workset_id) is None:
            raise ApiError(
                404, "DEAD_LETTER_NOT_FOUND", f"workset {workset_id!r} is not in the dead-letter queue"
            )
    return workset_id


async def dead_letter(
    request: web.Request, requeue_error: str | None = None, status: int = 200
) -> web.Response:
    workset_id = await _parked(request)
    async with UnitOfWork(request.app[POOL]) as uow:
        row = await uow.dead_letters.get(workset_id)
        ws = await uow.worksets.get(workset_id)
        d = await detail_model(uow, ws)
        runs = await uow.slots.runs(workset_id)
    context = {
        "row": row,
        "ws": d,
        "runs": runs,
        "requeue_error": requeue_error,
        "priorities": ["urgent", "normal", "low"],
    }
    return await render(request, "ops/dlq_item.html", context, status=status)


async def requeue_dead_letter(request: web.Request) -> web.Response:
    workset_id = await _parked(request)
    form = await request.post()
    try:
        await commands.requeue(
            request.app[POOL], workset_id, actor=actor_of(request), changes=requeue_changes(form)
        )
    except RequeueChangesInvalid as exc:
        return await dead_letter(request, requeue_error=str(exc), status=400)
    see_other(f"/worksets/{workset_id}", notice="dlq-requeued")


async def purge_dead_letter(request: web.Request) -> web.Response:
    workset_id = await _parked(request)
    await commands.purge_dead_letter(request.app[POOL], workset_id, actor=actor_of(request))
    see_other("/ops/dlq", notice="dlq-purged")


# --- health --------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    return await render(request, "ops/health.html", await system_health(request))


async def system_health(request: web.Request) -> dict[str, Any]:
    """What the portal can see of every part: PostgreSQL and NATS round trips, the outbox backlog, each
    durable consumer's backlog on the event stream, dead letters, and (embedded stack) each service's
    /readyz as `stamen status` reads it."""
    pool, bus = request.app[POOL], request.app[BUS]
    started = time.perf_counter()
    async with pool.acquire() as conn:
        outbox = await conn.fetchrow(
            "SELECT count(*) AS n, min(created_at) AS oldest FROM outbox"  # rows leave when published
        )
    pg_ms = (time.perf_counter() - started) * 1000
    if not bus.connected.is_set():
        return {
            "postgres_ms": pg_ms,
            "nats_ms": None,
            "nats_status": bus.status(),
            **_outbox(outbox),
            "consumers": [],
            "dlq_messages": None,
            "events_messages": None,
            "events_last_seq": None,
            "services": await _services(request),
        }
    js = bus.js
    started = time.perf_counter()
    await bus.nc.flush(timeout=2)
    nats_ms = (time.perf_counter() - started) * 1000
    consumers = []
    for info in await js.consumers_info(EVENTS_STREAM):
        if info.config.durable_name:
            consumers.append(
                {
                    "name": info.name,
                    "pending": info.num_pending or 0,
                    "unacked": info.num_ack_pending or 0,
                    "redelivered": info.num_redelivered or 0,
                    "last_active": info.delivered.last_active if info.delivered else None,
                }
            )
    dlq = (await js.stream_info(DLQ_STREAM)).state.messages
    events = (await js.stream_info(EVENTS_STREAM)).state
    return {
        "postgres_ms": pg_ms,
        "nats_ms": nats_ms,
        "nats_status": bus.status(),
        **_outbox(outbox),
        "consumers": sorted(consumers, key=lambda c: str(c["name"])),
        "dlq_messages": dlq,
        "events_messages": events.messages,
        "events_last_seq": events.last_seq,
        "services": await _services(request),
    }


def _outbox(row: Any) -> dict[str, Any]:
    oldest = row["oldest"] if row else None
    return {
        "outbox_backlog": int(row["n"]) if row else 0,
        "outbox_oldest_seconds": (datetime.now(UTC) - oldest).total_seconds() if oldest else None,
    }


async def _services(request: web.Request) -> list[dict[str, Any]] | None:
    """Each service's readiness, when this portal runs in an embedded stack (stack.json says where they
    listen); None elsewhere (compose and production watch /readyz themselves)."""
    doc = read_stack_file(request.app[SETTINGS].state_dir)
    if not doc or not doc.get("services"):
        return None
    out = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for name, info in sorted(doc["services"].items()):
            try:
                async with session.get(f"{info['url']}/readyz") as resp:
                    body = await resp.json()
                    status = str(body.get("status", resp.status))
                    checks = body.get("checks", {})
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                status, checks = f"down ({type(exc).__name__})", {}
            out.append(
                {
                    "name": name,
                    "status": status,
                    "checks": checks,
                    "url": info.get("url"),
                    "restarts": info.get("restarts", 0),
                }
            )
    return out
