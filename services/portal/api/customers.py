"""Customer endpoints: onboard (operators), list, show, monthly usage (JSON or CSV)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import body, principal_of, query, reply, require_operator, tenant_for
from services.portal.api.context import SECURITY
from stamen.customers import AsyncCustomerManager
from stamen.customers.model import Customer, CustomerNotFound
from stamen.customers.usage import Month, monthly_usage, to_csv
from stamen.service.keys import POOL


def customer_out(c: Customer) -> m.CustomerOut:
    fields = {k: v for k, v in asdict(c).items() if k in m.CustomerOut.model_fields}
    return m.CustomerOut.model_validate(fields)


def _manager(request: web.Request) -> AsyncCustomerManager:
    return AsyncCustomerManager(request.app[POOL], request.app[SECURITY].customers)


async def create(request: web.Request) -> web.Response:
    require_operator(request)
    new = await body(request, m.CustomerCreate)
    result = await _manager(request).onboard_customer(**new.model_dump())
    return reply(
        m.CustomerCreated(customer=customer_out(result.customer), created=result.created),
        201 if result.created else 200,
        {"Location": f"/api/v1/customers/{result.customer.customer_id}"},
    )


async def list_customers(request: web.Request) -> web.Response:
    q = query(request, m.CustomerListQuery)
    principal = principal_of(request)
    manager = _manager(request)
    if not principal.is_operator:  # a customer sees itself
        assert principal.customer_id is not None
        try:
            own = [await manager.get_customer(principal.customer_id)]
        except CustomerNotFound:
            own = []
        mine = [c for c in own if q.status is None or c.status == q.status]
        return reply(m.CustomerList(items=[customer_out(c) for c in mine], next_cursor=None))
    rows = await manager.list_customers(status=q.status, after=q.cursor, limit=q.limit + 1)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return reply(
        m.CustomerList(
            items=[customer_out(c) for c in rows], next_cursor=rows[-1].customer_id if more and rows else None
        )
    )


async def show(request: web.Request) -> web.Response:
    customer_id = tenant_for(request, request.match_info["customer_id"])
    return reply(customer_out(await _manager(request).get_customer(customer_id)))


async def usage(request: web.Request) -> web.Response:
    customer_id = tenant_for(request, request.match_info["customer_id"])
    q = query(request, m.UsageQuery)
    month = Month.parse(q.month) if q.month else Month.of(datetime.now(UTC))
    report = await monthly_usage(request.app[POOL], request.app[SECURITY].s3, customer_id, month)
    if q.format == "csv":
        return web.Response(
            text=to_csv([report]),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="usage-{customer_id}-{month}.csv"'},
        )
    return reply(m.UsageOut.model_validate(report.as_dict()))
