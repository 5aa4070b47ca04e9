"""Regions wiring: the registry (file -> table), the probes, the health monitor with hysteresis and,
when STAMEN_REGION_DB_FAILOVER is on, the database failover coordinator. Consumes nothing; publishes
region.health_changed (through the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from services.regions.failover import DatabaseFailover, DatabaseNode
from services.regions.monitor import HealthMonitor, ProbeSet
from stamen.regions.leader import LeaderStore
from stamen.regions.registry import PostgresUrl, RegionRegistry, load_registry
from stamen.regions.settings import RegionSettings
from stamen.service.keys import BUS, POOL, SETTINGS
from stamen.service.runner import base_app
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork

MONITOR = web.AppKey("region_monitor", HealthMonitor)


def init_app(settings: Settings) -> web.Application:
    app = base_app("regions", settings)
    app.cleanup_ctx.append(monitor_ctx)
    return app


def database_failover(
    app: web.Application, registry: RegionRegistry, config: RegionSettings
) -> DatabaseFailover:
    settings = app[SETTINGS]
    url = PostgresUrl.parse(settings.require_database_url())
    nodes = {
        r.name: DatabaseNode(
            r.name, r.postgres.host, r.postgres.port, url.for_host(r.postgres.host, r.postgres.port)
        )
        for r in registry.regions
        if r.postgres
    }

    async def open_store() -> LeaderStore:
        return await LeaderStore.open(
            app[BUS].js, replicas=settings.stream_replicas, placement_tags=settings.stream_placement_tags
        )  # BusUnavailable until NATS answers: the coordinator tries again next round

    return DatabaseFailover(
        nodes, open_store, synchronous=config.region_db_synchronous, actor="regions",
        timeout=config.region_probe_timeout_seconds,
    )  # fmt: skip


async def monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, config = app[SETTINGS], RegionSettings()
    registry = load_registry(settings, config.regions_file)
    async with UnitOfWork(app[POOL]) as uow:
        await uow.regions.sync_registry(registry.records())
        await uow.commit()
    probes = ProbeSet(registry, settings, config.region_probe_timeout_seconds)
    monitor = HealthMonitor(
        app[POOL],
        probes,
        config.policy(),
        interval=config.region_probe_interval_seconds,
        timeout=config.region_probe_timeout_seconds,
        failover=database_failover(app, registry, config) if config.region_db_failover else None,
    )
    app[MONITOR] = monitor
    task = asyncio.create_task(monitor.run(), name="region-monitor")
    yield
    monitor.stop()
    await asyncio.wait([task], timeout=settings.drain_timeout_seconds)
    task.cancel()
    await probes.close()
