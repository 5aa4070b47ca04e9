"""The dashboard: worksets by state, running now, the queue and positions in it, retries waiting, this
month's metered cost and vCPU-hours against the tenant's quotas, and charts of the last 30 days.

Counts, running, queue and retries are read on every view; the sums over a month's step runs and 30 days
of actuals (this month's metering, the charts) are made again when a workset was created or finished since,
else reused for up to `portal_chart_cache_seconds`, and say when they were made: the page stays fast at
100,000 worksets (bench/portal.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
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
from stamen.domain.lifecycle import TERMINAL_STATES, WorksetState
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
    pool = request.app[POOL]

    async def count() -> dict[str, int]:  # every workset of the tenant: the longest read, so on its own
        async with pool.acquire() as conn:
            return await WorksetQueries(conn).counts_by_state(tenant)

    async def in_flight() -> tuple[list[Any], list[Any], list[Any], Any]:
        async with pool.acquire() as conn:
            q = WorksetQueries(conn)
            customer = await CustomerRepository(conn).get(tenant) if tenant else None
            return (
                await q.running(tenant, 8),
                await q.queued(tenant, 8),
                await q.retry_waits(tenant, 8),
                customer,
            )

    counts, (running, queued, retries, customer) = await asyncio.gather(count(), in_flight())
    # The charts change when a workset is created or finishes: then they are made again at once.
    basis = (sum(counts.values()), *(counts.get(s.value, 0) for s in sorted(TERMINAL_STATES)))
    ttl = request.app[SECURITY].portal.portal_chart_cache_seconds
    totals = await request.app[AGGREGATES].get(tenant, basis, ttl, lambda: _aggregates(request, tenant))
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
        "customer": customer,
        "storage": await _storage(request, customer) if customer else None,
        **totals,
    }


async def _aggregates(request: web.Request, tenant: str | None) -> dict[str, Any]:
    """This month's metered CPU and cost and the 30-day charts: sums over every workset of the tenant,
    so they are kept for `portal_chart_cache_seconds` (the rest of the dashboard is read fresh)."""
    now = datetime.now(UTC)
    month = Month.of(now)
    since = datetime.combine((now - timedelta(days=CHART_DAYS - 1)).date(), datetime.min.time(), UTC)
    async with request.app[POOL].acquire() as conn:
        q = WorksetQueries(conn)
        metered = await q.metered_steps(tenant, month.start, month.end)
        created = await q.created_per_day(tenant, since)
        cost = await q.cost_per_day(tenant, since)
    this_month = metered_cost(
        [MeteredStep(cpu_seconds=cpu, region=r, price_factor=f) for r, f, cpu, _ in metered]
    )
    days = [(since + timedelta(days=i)).date() for i in range(CHART_DAYS)]
    return {
        "month": str(month),
        "vcpu_hours": sum(cpu for _, _, cpu, _ in metered) / 3600.0,
        "cost_usd": this_month.cost_usd,
        "as_of": now,
        "charts": {
            "days": [d.isoformat() for d in days],
            "worksets": [created.get(d, 0) for d in days],
            "cost": [round(cost.get(d, (0.0, 0.0))[0], 4) for d in days],
            "vcpu_hours": [round(cost.get(d, (0.0, 0.0))[1], 4) for d in days],
        },
    }


class AggregateCache:
    """Results per tenant, reused while their basis (what they were computed from) is unchanged and for at
    most `ttl` seconds; concurrent requests for the same tenant compute it once."""

    def __init__(self) -> None:
        self._kept: dict[str | None, tuple[float, Hashable, dict[str, Any]]] = {}
        self._locks: dict[str | None, asyncio.Lock] = {}

    async def get(
        self, key: str | None, basis: Hashable, ttl: float, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        async with self._locks.setdefault(key, asyncio.Lock()):
            hit = self._kept.get(key)
            if hit is not None and hit[1] == basis and time.monotonic() - hit[0] < ttl:
                return hit[2]
            started = time.monotonic()
            value = await compute()
            if ttl > 0:
                self._kept[key] = (started, basis, value)
            return value

    def clear(self) -> None:
        self._kept.clear()


AGGREGATES = web.AppKey("dashboard_aggregates", AggregateCache)


async def _storage(request: web.Request, customer: Any) -> dict[str, Any]:
    """Bytes in the tenant's bucket (the quota check's cached figure, at most a minute old)."""
    security = request.app[SECURITY]
    try:
        used = await security.bucket_usage.bytes_used(security.s3, customer.customer_id, customer.s3_bucket)
    except StorageNotMeasured as exc:
        return {"used_gb": None, "max_gb": customer.max_storage_gb, "error": str(exc)}
    return {"used_gb": used / 1e9, "max_gb": customer.max_storage_gb, "error": None}
