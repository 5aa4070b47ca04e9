"""aiohttp wiring shared by the services that touch S3 (validator, portal): the object store as a
cleanup context, opened before the consumers start so handlers always find it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from stamen.inputs.demo import seed_demo_inputs
from stamen.inputs.objects import S3ObjectStore, StorageError, endpoint_is_loopback, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service import contexts
from stamen.service.keys import SETTINGS

log = structlog.get_logger(__name__)

INTAKE_SETTINGS = web.AppKey("intake_settings", IntakeSettings)
OBJECT_STORE = web.AppKey("object_store", S3ObjectStore)


def should_seed_demo(intake: IntakeSettings, endpoint_url: str | None) -> bool:
    if intake.seed_demo_data == "auto":
        return endpoint_is_loopback(endpoint_url)
    return intake.seed_demo_data == "true"


async def object_store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, intake = app[SETTINGS], app[INTAKE_SETTINGS]
    async with open_object_store(settings, intake) as store:
        app[OBJECT_STORE] = store
        if should_seed_demo(intake, settings.aws_endpoint_url):
            try:
                await seed_demo_inputs(store)
            except StorageError as exc:  # the demo fails its checks; the service still runs
                log.warning("demo.seed_failed", error=str(exc))
        yield


def add_object_store(app: web.Application, intake: IntakeSettings) -> None:
    """Register the store before the consumers' context (cleanup contexts start in order)."""
    app[INTAKE_SETTINGS] = intake
    position = next(
        (i for i, ctx in enumerate(app.cleanup_ctx) if ctx is contexts.consumers_ctx), len(app.cleanup_ctx)
    )
    app.cleanup_ctx.insert(position, object_store_ctx)
