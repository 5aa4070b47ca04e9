"""Run one service's aiohttp application until SIGTERM/SIGINT, then shut down in order."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from stamen.bus.consumer import ConsumerSpec
from stamen.logs import configure_logging
from stamen.service import contexts, health
from stamen.service.keys import CONSUMER_SPECS, SERVICE_NAME, SETTINGS
from stamen.settings import Settings


def base_app(
    name: str,
    settings: Settings,
    *,
    consumers: Callable[[web.Application], list[ConsumerSpec]] | None = None,
    with_relay: bool = True,
) -> web.Application:
    """The parts every service has: store, bus, relay, consumers, health. Services add their own."""
    app = web.Application()
    app[SETTINGS] = settings
    app[SERVICE_NAME] = name
    app.add_routes(health.routes)
    app.cleanup_ctx.append(contexts.postgres_ctx)
    app.cleanup_ctx.append(contexts.nats_ctx)
    if with_relay:
        app.cleanup_ctx.append(contexts.relay_ctx)
    app[CONSUMER_SPECS] = consumers(app) if consumers else []
    app.cleanup_ctx.append(contexts.consumers_ctx)
    return app


def run(name: str, init_app: Callable[[Settings], web.Application]) -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service=name)
    app = init_app(settings)
    # run_app turns SIGTERM/SIGINT into a graceful shutdown that runs the cleanup contexts.
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.drain_timeout_seconds,
    )
