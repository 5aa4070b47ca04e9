"""Regions wiring. So far only the shared parts run (store, bus, outbox relay, health):
region health checks and failover are not built yet, so this service consumes nothing yet."""

from __future__ import annotations

from aiohttp import web

from stamen.service.runner import base_app
from stamen.settings import Settings


def init_app(settings: Settings) -> web.Application:
    return base_app("regions", settings)
