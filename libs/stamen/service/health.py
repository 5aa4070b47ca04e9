"""/healthz (the process is alive), /readyz (its dependencies answer), /metrics (Prometheus).

Both health answers name the service and its process id, so whoever checks (the launcher's status
screen) can tell it reached the process it meant, not another one on a reused port.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stamen.service.keys import BUS, CONSUMER_SPECS, CONSUMERS, POOL, POSTGRES, SERVICE_NAME, STARTUP

routes = web.RouteTableDef()
READY_PROBE_SECONDS = 2.0


def identity(app: web.Application) -> dict[str, object]:
    return {"service": app[SERVICE_NAME], "pid": os.getpid()}


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", **identity(request.app)})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, str] = {}
    if POOL in app:
        checks["postgres"] = await _postgres(app)
    if BUS in app:
        checks["nats"] = app[BUS].status()
    if app.get(CONSUMER_SPECS):
        started = {c.spec.durable for c in app.get(CONSUMERS, [])}
        idle = [s.durable for s in app[CONSUMER_SPECS] if s.durable not in started]
        checks["consumers"] = "ok" if not idle else f"error: not started: {', '.join(idle)}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", **identity(app), "checks": checks},
        status=200 if ready else 503,
    )


async def _postgres(app: web.Application) -> str:
    if POSTGRES in app and not app[POSTGRES].reachable:
        return app[POSTGRES].status()  # consumers have stopped fetching until it answers
    try:
        async with asyncio.timeout(READY_PROBE_SECONDS), app[POOL].acquire() as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"


def starting_app(name: str, app: web.Application) -> web.Application:
    """What answers on the service's port while it waits for its dependencies at start: alive, not
    ready, and what it is waiting for."""

    @web.middleware
    async def closing(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Each answer ends its connection: a client's next request reaches the service once it has started.
        try:
            response = await handler(request)
        except web.HTTPException:
            message = (
                "the service is starting (waiting for its dependencies); only /healthz and /readyz answer yet"
            )
            response = web.json_response(
                {"code": "SERVICE_STARTING", "message": message, "details": {}},
                status=503,
                headers={"Retry-After": "1"},
            )
        response.force_close()
        return response

    placeholder = web.Application(middlewares=[closing])

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": name, "pid": os.getpid(), "starting": True})

    async def ready(_: web.Request) -> web.Response:
        waits = app[STARTUP].waiting if STARTUP in app else {}
        checks = dict(waits) or {"startup": "error: starting"}
        body = {"status": "starting", "service": name, "pid": os.getpid(), "checks": checks}
        return web.json_response(body, status=503)

    placeholder.router.add_get("/healthz", health)
    placeholder.router.add_get("/readyz", ready)
    return placeholder


@routes.get("/metrics")
async def metrics(_: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
