"""Typed keys for what a service's aiohttp application holds."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from aiohttp import web

from stamen.bus.connections import BusConnection
from stamen.bus.consumer import ConsumerSpec, DurableConsumer
from stamen.service.dependencies import Dependency, StartupWaits
from stamen.service.idempotent import GroupCommit
from stamen.service.reconciler import ReconcilePass
from stamen.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICE_NAME = web.AppKey("service_name", str)
POOL = web.AppKey("pool", asyncpg.Pool)
# The service's group commit: idempotent consumers that opt in share transactions (stamen.service.idempotent).
INBOX_GROUP = web.AppKey("inbox_group", GroupCommit)
# PostgreSQL's reachability as this process sees it: consumers stop fetching while it is closed.
POSTGRES = web.AppKey("postgres", Dependency)
# The NATS connection (opened in the background: `BUS.connected` says when it is there).
BUS = web.AppKey("bus", BusConnection)
STARTUP = web.AppKey("startup", StartupWaits)
CONSUMER_SPECS = web.AppKey("consumer_specs", list[ConsumerSpec])
CONSUMERS = web.AppKey("consumers", list[DurableConsumer])
# How a service builds its reconcile passes (stamen.service.reconciler), given the started app.
RECONCILE_PASSES: web.AppKey[Callable[[web.Application], list[ReconcilePass]]] = web.AppKey(
    "reconcile_passes"
)
