"""/healthz (the process is alive), /readyz (its dependencies answer), /metrics (Prometheus)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stamen.service.keys import CONSUMERS, NATS_CLIENT, POOL, SERVICE_NAME

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE_NAME]})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, str] = {}
    if POOL in app:
        try:
            async with app[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"error: {exc}"
    if NATS_CLIENT in app:
        checks["nats"] = "ok" if app[NATS_CLIENT].is_connected else "error: disconnected"
    if CONSUMERS in app:
        idle = [c.spec.durable for c in app[CONSUMERS] if not c.ready.is_set()]
        checks["consumers"] = "ok" if not idle else f"error: not started: {', '.join(idle)}"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "service": app[SERVICE_NAME], "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
async def metrics(_: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp
