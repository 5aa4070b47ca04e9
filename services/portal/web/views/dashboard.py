"""The dashboard: worksets by state, running now, the queue and positions in it, retries waiting, this
month's metered cost and vCPU-hours against the tenant's quotas, and charts of the last 30 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.portal.api.access import visible_filter
from services.portal.api.context import SECURITY
from services.portal.web import live
from services.portal.web.render import render
from stamen.customers import StorageNotMeasured
from stamen.customers.repository import CustomerRepository
from stamen.customers.usage import Month
from stamen.domain.lifecycle import WorksetState
from stamen.service.keys import POOL
from stamen.store.workset_queries import WorksetQueries
from stamen.worksets.cost import MeteredStep, metered_cost

CHART_DAYS = 30
STATE_ORDER = [s.value for s in WorksetState]


async def page(request: web.Request) -> web.Response:
    await live.remember_position(request)
    tenant = visible_filter(request, request.query.get("tenant") or None)
    template = "dashboard_live.html" if request.query.get("fragment") == "live" else "dashboard.html"
    return await render(request, template, await dashboard(request, tenant))


async def dashboard(request: web.Request, tenant: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    month = Month.of(now)
    since = datetime.combine((now - timedelta(days=CHART_DAYS - 1)).date(), datetime.min.time(), UTC)
    async with request.app[POOL].acquire() as conn:
        q = WorksetQueries(conn)
        counts = await q.counts_by_state(tenant)
        running = await q.running(tenant, 8)
        queued = await q.queued(tenant, 8)
        retries = await q.retry_waits(tenant, 8)
        metered = await q.metered_steps(tenant, month.start, month.end)
        created = await q.created_per_day(tenant, since)
        cost = await q.cost_per_day(tenant, since)
        customer = await CustomerRepository(conn).get(tenant) if tenant else None
    this_month = metered_cost([MeteredStep(cpu_seconds=cpu, region=r, price_factor=f) for r, f, cpu, _ in metered])
    days = [(since + timedelta(days=i)).date() for i in range(CHART_DAYS)]
    return {
        "tenant": tenant,
        "counts": [(s, counts.get(s, 0)) for s in STATE_ORDER if counts.get(s)],
        "total": sum(counts.values()),
        "running": running,
        "running_count": counts.get("running", 0) + counts.get("scheduled", 0),
        "queued": queued,
        "queue_depth": counts.get("queued", 0),
        "retries": retries,
        "retry_count": counts.get("retry_wait", 0),
        "month": str(month),
        "vcpu_hours": sum(cpu for _, _, cpu, _ in metered) / 3600.0,
        "cost_usd": this_month.cost_usd,
        "customer": customer,
        "storage": await _storage(request, customer) if customer else None,
        "charts": {
            "days": [d.isoformat() for d in days],
            "worksets": [created.get(d, 0) for d in days],
            "cost": [round(cost.get(d, (0.0, 0.0))[0], 4) for d in days],
            "vcpu_hours": [round(cost.get(d, (0.0, 0.0))[1], 4) for d in days],
        },
    }


async def _storage(request: web.Request, customer: Any) -> dict[str, Any]:
    """Bytes in the tenant's bucket (the quota check's cached figure, at most a minute old)."""
    security = request.app[SECURITY]
    try:
        used = await security.bucket_usage.bytes_used(security.s3, customer.customer_id, customer.s3_bucket)
    except StorageNotMeasured as exc:
        return {"used_gb": None, "max_gb": customer.max_storage_gb, "error": str(exc)}
    return {"used_gb": used / 1e9, "max_gb": customer.max_storage_gb, "error": None}
