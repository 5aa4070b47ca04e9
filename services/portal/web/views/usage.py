"""Usage and billing per month: worksets, storage, vCPU-hours, estimated vs metered cost, charts of the
last months and of each day, and the CSV export (the same report as GET /api/v1/customers/{id}/usage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.portal.api.access import principal_of, tenant_for
from services.portal.api.context import SECURITY
from services.portal.web.render import render
from stamen.customers.repository import CustomerRepository
from stamen.customers.usage import Month, monthly_usage, to_csv
from stamen.service.keys import POOL
from stamen.store.workset_queries import WorksetQueries

HISTORY_MONTHS = 6


def _tenant(request: web.Request) -> str | None:
    principal = principal_of(request)
    asked = request.query.get("tenant") or None
    if principal.is_operator:
        return tenant_for(request, asked) if asked else None
    return tenant_for(request, asked)


def _month(request: web.Request) -> Month:
    text = request.query.get("month")
    return Month.parse(text) if text else Month.of(datetime.now(UTC))


def _previous(month: Month, n: int) -> Month:
    index = month.year * 12 + month.month - 1 - n
    return Month(index // 12, index % 12 + 1)


async def page(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    month = _month(request)
    context: dict[str, Any] = {"tenant": tenant, "month": str(month), "report": None, "customers": []}
    if tenant is None:  # an operator picks a customer first
        async with request.app[POOL].acquire() as conn:
            context["customers"] = await CustomerRepository(conn).page(limit=500)
        return await render(request, "usage.html", context)
    s3 = request.app[SECURITY].s3
    report = await monthly_usage(request.app[POOL], s3, tenant, month)
    history = [
        await monthly_usage(request.app[POOL], s3, tenant, _previous(month, n))
        for n in range(HISTORY_MONTHS - 1, 0, -1)
    ] + [report]
    async with request.app[POOL].acquire() as conn:
        per_day = await WorksetQueries(conn).cost_per_day(tenant, month.start)
    today = datetime.now(UTC).date()
    days = []
    day = month.start
    while day < month.end and day.date() <= today:
        days.append(day.date())
        day += timedelta(days=1)
    context.update(
        report=report,
        charts={
            "months": [r.month for r in history],
            "estimated": [round(r.estimated_cost_usd, 4) for r in history],
            "metered": [round(r.actual_cost_usd, 4) for r in history],
            "vcpu_hours": [round(r.vcpu_hours, 4) for r in history],
            "days": [d.isoformat() for d in days],
            "day_cost": [round(per_day.get(d, (0.0, 0.0))[0], 4) for d in days],
        },
        previous=str(_previous(month, 1)),
        following=str(_previous(month, -1)) if month < Month.of(datetime.now(UTC)) else None,
    )
    return await render(request, "usage.html", context)


async def csv(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    if tenant is None:
        tenant = tenant_for(request, None)  # TENANT_REQUIRED for an operator who named none
    month = _month(request)
    report = await monthly_usage(request.app[POOL], request.app[SECURITY].s3, tenant, month)
    return web.Response(
        text=to_csv([report]),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="usage-{tenant}-{month}.csv"'},
    )
