"""The worksets list: filters (state, priority, pipeline, created between), search by name or sample id,
sort, keyset pages (a cursor names the last row shown, so page 50 is as fast as page 1), and bulk cancel /
retry / archive through the same commands as the API, each workset checked with the API's visibility rule."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args

from aiohttp import web

from services.portal.api.access import actor_of, can_see, visible_filter
from services.portal.api.errors import ApiError
from services.portal.web import live
from services.portal.web.render import render
from stamen import commands
from stamen.domain.lifecycle import WorksetState
from stamen.service.keys import POOL
from stamen.store.errors import ConcurrencyConflict, WorksetNotFound
from stamen.store.workset_queries import SORTS, WorksetFilter, WorksetQueries, WorksetRow
from stamen.worksets.spec import Pipeline, Priority

PAGE_SIZE = 50
BULK_MAX = 200
STATES = [s.value for s in WorksetState]
PIPELINES = list(get_args(Pipeline))
PRIORITIES = list(get_args(Priority))
BULK_ACTIONS = {"cancel": "Cancel", "retry": "Retry", "archive": "Archive"}


@dataclass(frozen=True)
class ListQuery:
    """The list's query string, checked: a bad value is a 400 page naming the parameter."""

    filter: WorksetFilter
    sort: str
    cursor: tuple[Any, str] | None
    page: int
    params: dict[str, str]  # the filters as given, to rebuild links


def _bad(parameter: str, why: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER", f"{parameter}: {why}", {"parameter": parameter})


def _date(value: str, parameter: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _bad(parameter, "use a date like 2026-01-31") from None


def parse_query(request: web.Request) -> ListQuery:
    q = request.query
    tenant = visible_filter(request, q.get("tenant") or None)
    params = {
        k: q[k] for k in ("q", "state", "priority", "pipeline", "from", "to", "sort", "tenant") if q.get(k)
    }
    state, priority, pipeline = q.get("state", ""), q.get("priority", ""), q.get("pipeline", "")
    sort = q.get("sort") or "newest"
    if state and state not in STATES:
        raise _bad("state", f"one of {', '.join(STATES)}")
    if priority and priority not in PRIORITIES:
        raise _bad("priority", f"one of {', '.join(PRIORITIES)}")
    if pipeline and pipeline not in PIPELINES:
        raise _bad("pipeline", f"one of {', '.join(PIPELINES)}")
    if sort not in SORTS:
        raise _bad("sort", f"one of {', '.join(SORTS)}")
    start, end = _date(q.get("from", ""), "from"), _date(q.get("to", ""), "to")
    search = q.get("q", "").strip()[:200] or None
    page = int(q["page"]) if q.get("page", "").isdigit() and 0 < int(q["page"]) < 1_000_000 else 1
    return ListQuery(
        filter=WorksetFilter(
            tenant_id=tenant,
            states=(state,) if state else (),
            priority=priority or None,
            pipeline=pipeline or None,
            created_from=datetime.combine(start, datetime.min.time(), UTC) if start else None,
            created_before=datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC)
            if end
            else None,
            search=search,
        ),
        sort=sort,
        cursor=decode_cursor(q["after"], sort) if q.get("after") else None,
        page=page,
        params=params,
    )


def encode_cursor(row: WorksetRow, sort: str) -> str:
    key = row.sort_key(sort)
    doc = [key.isoformat() if isinstance(key, datetime) else key, row.id]
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def decode_cursor(text: str, sort: str) -> tuple[Any, str]:
    try:
        key, workset_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(workset_id, str) or not isinstance(key, str):
            raise ValueError(text)
        value: Any = datetime.fromisoformat(key) if SORTS[sort][0] == "created_at" else key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        raise _bad("after", "not a page link this portal made; start again from the first page") from None
    return value, workset_id


async def list_page(request: web.Request) -> web.Response:
    await live.remember_position(request)
    return await render(request, "worksets/list.html", await _listing(request))


async def _listing(request: web.Request, results: list[dict[str, str]] | None = None) -> dict[str, Any]:
    query = parse_query(request)
    async with request.app[POOL].acquire() as conn:
        rows = await WorksetQueries(conn).page(
            query.filter, sort=query.sort, after=query.cursor, limit=PAGE_SIZE + 1
        )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_params = None
    if more and rows:
        next_params = {
            **query.params,
            "after": encode_cursor(rows[-1], query.sort),
            "page": str(query.page + 1),
        }
    return {
        "rows": rows,
        "query": query,
        "next_params": next_params,
        "states": STATES,
        "pipelines": PIPELINES,
        "priorities": PRIORITIES,
        "sorts": {
            "newest": "Newest first",
            "oldest": "Oldest first",
            "name": "Name A to Z",
            "name_desc": "Name Z to A",
        },
        "bulk_actions": BULK_ACTIONS,
        "results": results,
        "show_tenant": query.filter.tenant_id is None,
    }


async def row(request: web.Request) -> web.Response:
    """One row of the list again (htmx, on a live event for it)."""
    workset_id = request.match_info["workset_id"]
    async with request.app[POOL].acquire() as conn:
        found = (await WorksetQueries(conn).rows([workset_id])).get(workset_id)
    if found is None or not can_see(request, found.tenant_id):
        raise ApiError(404, "WORKSET_NOT_FOUND", f"workset {workset_id!r} does not exist")
    show_tenant = request.query.get("tenant_column") == "1"
    return await render(request, "worksets/_row.html", {"ws": found, "show_tenant": show_tenant})


async def bulk(request: web.Request) -> web.Response:
    form = await request.post()
    action = str(form.get("action", ""))
    ids = [str(v) for v in form.getall("ids", [])][:BULK_MAX]
    if action not in BULK_ACTIONS:
        raise _bad("action", f"one of {', '.join(BULK_ACTIONS)}")
    results = [{"id": i, **await _apply(request, action, i)} for i in dict.fromkeys(ids)]
    return await render(request, "worksets/list.html", await _listing(request, results))


async def _apply(request: web.Request, action: str, workset_id: str) -> dict[str, str]:
    """One bulk step; another tenant's workset is reported exactly as a missing one."""
    pool, actor = request.app[POOL], actor_of(request)
    async with pool.acquire() as conn:
        found = (await WorksetQueries(conn).rows([workset_id])).get(workset_id)
    if found is None or not can_see(request, found.tenant_id):
        return {"ok": "", "outcome": "not found"}
    try:
        if action == "cancel":
            result = await commands.request_cancel(
                pool, workset_id, actor=actor, reason="bulk cancel in the portal"
            )
            state = result.state + (" (stopping)" if result.pending else "")
        elif action == "retry":
            state = await commands.requeue(pool, workset_id, actor=actor, changes=None)
        else:
            state = await commands.archive(pool, workset_id, actor=actor)
    except (
        commands.WorksetNotCancellable,
        commands.WorksetNotRequeueable,
        commands.WorksetNotArchivable,
    ) as exc:
        return {"ok": "", "outcome": str(exc)}
    except (ConcurrencyConflict, WorksetNotFound) as exc:
        return {"ok": "", "outcome": str(exc)}
    return {"ok": "1", "outcome": f"now {state}"}
