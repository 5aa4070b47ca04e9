"""Run one service's aiohttp application until SIGTERM/SIGINT, then shut down in order.

The port answers from the first moment: while the service waits for its dependencies at start, a
placeholder says it is alive and what it waits for (/readyz 503, closing each connection); then the
service itself answers every new connection on the same listening server. Under `stamen up` the socket is the launcher's (STAMEN_HTTP_FD), so the
port is this service's alone and stays the same across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable

import structlog
from aiohttp import web, web_server

from stamen.bus.consumer import ConsumerSpec
from stamen.logs import configure_logging
from stamen.service import contexts, health
from stamen.service.dependencies import StartupWaits
from stamen.service.idempotent import GATHER_SECONDS, GroupCommit
from stamen.service.keys import (
    CONSUMER_SPECS,
    INBOX_GROUP,
    POOL,
    RECONCILE_PASSES,
    SERVICE_NAME,
    SETTINGS,
    STARTUP,
)
from stamen.service.loop import EventLoopUnavailable, run_on_loop
from stamen.service.reconciler import ReconcilePass
from stamen.settings import Settings

log = structlog.get_logger(__name__)


def base_app(
    name: str,
    settings: Settings,
    *,
    consumers: Callable[[web.Application], list[ConsumerSpec]] | None = None,
    reconcile: Callable[[web.Application], list[ReconcilePass]] | None = None,
    with_relay: bool = True,
    group_gather_seconds: float = GATHER_SECONDS,
) -> web.Application:
    """The parts every service has: store, bus, relay, consumers, reconcilers, health. Services add
    their own. `reconcile`: how to build the service's reconcile passes once it has started.
    `group_gather_seconds`: the gathering window of the service's group commit (app[INBOX_GROUP])."""
    app = web.Application()
    app[SETTINGS] = settings
    app[SERVICE_NAME] = name
    app[STARTUP] = StartupWaits()
    app[INBOX_GROUP] = GroupCommit(lambda: app[POOL], gather_seconds=group_gather_seconds)
    app.add_routes(health.routes)
    app.cleanup_ctx.append(contexts.postgres_ctx)
    app.cleanup_ctx.append(contexts.nats_ctx)
    if with_relay:
        app.cleanup_ctx.append(contexts.relay_ctx)
    app[CONSUMER_SPECS] = consumers(app) if consumers else []
    app.cleanup_ctx.append(contexts.consumers_ctx)
    app[RECONCILE_PASSES] = reconcile or (lambda _: [])
    app.cleanup_ctx.append(contexts.reconciler_ctx)
    return app


def listening_socket(settings: Settings) -> socket.socket:
    """The launcher's socket when it passed one, else a new one on STAMEN_HTTP_HOST:STAMEN_HTTP_PORT."""
    if settings.http_fd is not None:
        sock = socket.socket(fileno=settings.http_fd)
        sock.setblocking(False)
        return sock
    sock = socket.create_server((settings.http_host, settings.http_port), backlog=128)
    sock.setblocking(False)
    return sock


async def serve(app: web.Application, settings: Settings) -> None:
    name = app[SERVICE_NAME]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = listening_socket(settings)
    log.info("service.listening", port=sock.getsockname()[1], event_loop=_loop_name(loop))
    placeholder = web.AppRunner(health.starting_app(name, app), access_log=None)
    await placeholder.setup()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.drain_timeout_seconds)
    # One listening server for the whole life, whose new connections go to the placeholder until the
    # service has started, then to the service. (Closing one server and opening another on the socket
    # loses a connection accepted in between: asyncio leaves it open and unread.)
    handled_by: list[web_server.Server] = [_server_of(placeholder)]
    listener = await loop.create_server(lambda: handled_by[0](), sock=sock, backlog=128)
    setup = asyncio.create_task(runner.setup(), name="startup")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({setup, stopping}, return_when=asyncio.FIRST_COMPLETED)
    try:
        if not setup.done():  # asked to stop while still waiting for a dependency
            setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await setup
            log.info("service.stopped_while_starting", waiting=app[STARTUP].waiting)
            return
        setup.result()  # a start-up that failed for good (not a dependency to wait for) ends here
        handled_by[0] = _server_of(runner)
        log.info("service.started")
        await stopping
    finally:
        stopping.cancel()
        listener.close()  # no new connections; those open are drained by the runners' shutdown
        await placeholder.cleanup()
        await runner.cleanup()


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _server_of(runner: web.AppRunner) -> web_server.Server:
    server = runner.server
    assert isinstance(server, web_server.Server), "the runner is set up"
    return server


def run(name: str, init_app: Callable[[Settings], web.Application]) -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, service=name)
    try:
        run_on_loop(serve(init_app(settings), settings), settings.event_loop)
    except EventLoopUnavailable as exc:
        log.error("service.no_event_loop", code=exc.code, error=str(exc))
        raise SystemExit(2) from None
