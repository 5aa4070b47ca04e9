"""Live updates over Server-Sent Events, fed by the bus: a customer's stream carries its own worksets'
events only, and a reconnect with Last-Event-ID continues exactly after the last event it saw."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp

from stamen.intake import submit_workset
from tests.web.conftest import Browser, World

NewBrowser = Callable[[], AbstractAsyncContextManager[Browser]]


async def next_event(stream: aiohttp.StreamReader, timeout: float = 15.0) -> dict[str, Any]:
    """One SSE message: its id, event name and data (pings, which are comments, are skipped)."""
    fields: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode().rstrip("\r\n")
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value


async def submit(world: World, tenant: str, name: str) -> str:
    result = await submit_workset(
        world.pool,
        tenant_id=tenant,
        name=name,
        spec={"name": name, "tenant": tenant},
        region="us-west-2",
        source="api",
        actor="test",
    )
    return result.workset_id


async def worksets_seen(stream: aiohttp.StreamReader, until: str) -> tuple[list[str], str]:
    """The workset ids of the events up to and including the first one about `until`, and its SSE id."""
    seen = []
    while True:
        event = await next_event(stream)
        if event.get("event") == "workset":
            seen.append(event["data"]["workset_id"])
            if event["data"]["workset_id"] == until:
                return seen, event["id"]


async def test_a_customer_hears_only_its_own_events_and_resumes_after_the_last(
    world: World, browser: NewBrowser
) -> None:
    a, b = world.a.id, world.b.id
    email, _ = await world.lab.user(a)
    async with browser() as tab:
        await tab.sign_in(email)
        async with tab.session.get("/live") as live:
            assert live.status == 200 and live.content_type == "text/event-stream"
            hello = await next_event(live.content)
            assert hello["event"] == "hello" and hello["id"].isdigit()
            others = await submit(world, b, "live-b-1")
            mine = await submit(world, a, "live-a-1")
            seen, last = await worksets_seen(live.content, until=mine)
            assert others not in seen and set(seen) == {mine}
        # Away: two more events happen, one of them A's; the reconnect gets A's and only that.
        await submit(world, b, "live-b-2")
        missed = await submit(world, a, "live-a-2")
        async with tab.session.get("/live", headers={"Last-Event-ID": last}) as live:
            hello = await next_event(live.content)
            assert hello["event"] == "hello" and hello["id"] == last
            seen, _ = await worksets_seen(live.content, until=missed)
            assert seen == [missed]
        # The same through the query parameter live.js uses when it has to open a new EventSource.
        async with tab.session.get(f"/live?last_event_id={last}") as live:
            await next_event(live.content)
            assert (await worksets_seen(live.content, until=missed))[0] == [missed]


async def test_an_operator_hears_every_tenant(world: World, browser: NewBrowser) -> None:
    email, _ = await world.lab.user(None, operator=True)
    async with browser() as tab:
        await tab.sign_in(email)
        async with tab.session.get("/live") as live:
            await next_event(live.content)
            first = await submit(world, world.a.id, "live-op-a")
            second = await submit(world, world.b.id, "live-op-b")
            seen, _ = await worksets_seen(live.content, until=second)
            assert first in seen and second in seen
