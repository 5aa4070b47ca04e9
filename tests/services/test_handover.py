"""The port of a starting service answers every connection: while it starts (the placeholder) and at the
moment the service takes over. A connection accepted during the hand-over once stayed open and unread,
so its client waited minutes for an answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from stamen.service.dependencies import StartupWaits
from stamen.service.keys import SERVICE_NAME, STARTUP
from stamen.service.runner import serve
from stamen.settings import Settings
from stamen.stack.ports import free_port


def slow_starting_app(started: asyncio.Event) -> web.Application:
    app = web.Application()
    app[SERVICE_NAME] = "handover"
    app[STARTUP] = StartupWaits()

    async def dependency(_: web.Application) -> AsyncIterator[None]:
        await started.wait()  # the test decides when start-up ends
        yield

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app.cleanup_ctx.append(dependency)
    app.router.add_get("/readyz", ready)
    return app


async def test_every_connection_is_answered_across_the_hand_over() -> None:
    port = free_port()
    started = asyncio.Event()
    settings = Settings(http_host="127.0.0.1", http_port=port, drain_timeout_seconds=1)
    service = asyncio.create_task(serve(slow_starting_app(started), settings))
    url = f"http://127.0.0.1:{port}/readyz"
    answers: dict[int, int] = {}
    unanswered: list[str] = []

    done = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            try:  # a new connection each time (force_close): each is accepted by whoever serves then
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    answers[r.status] = answers.get(r.status, 0) + 1
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.01)  # not listening yet
            except TimeoutError:
                unanswered.append("a request accepted but never answered")

    async def answered(status: int, count: int) -> None:
        deadline = time.monotonic() + 30
        while answers.get(status, 0) < count:
            assert time.monotonic() < deadline, f"no {count} answers {status} within 30 s: {answers}"
            await asyncio.sleep(0.01)

    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0)
        ) as session:
            clients = [asyncio.create_task(client(session)) for _ in range(16)]
            try:
                await answered(503, 100)  # the placeholder is answering
                started.set()  # the service takes over while connections keep arriving
                await answered(200, 200)  # and the service answers from then on
            finally:
                done.set()
                await asyncio.gather(*clients)
    finally:
        service.cancel()
        await asyncio.gather(service, return_exceptions=True)
    assert unanswered == []
    assert answers.get(503, 0) > 0 and answers.get(200, 0) > 0, answers
    assert set(answers) == {200, 503}, answers
