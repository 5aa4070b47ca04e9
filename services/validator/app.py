"""Validator wiring: consumes workset.submitted (validated+queued or rejected; the tenant's buckets and storage
quota included), keeps S3-dropped worksets' Daylily sentinels true, answers NATS intake, watches drop buckets,
validates from PostgreSQL while NATS is away."""

from __future__ import annotations

from aiohttp import web

from services.validator import reconcile
from services.validator.bus_away import bus_away_ctx
from services.validator.handlers import SENTINEL_CONSUMER
from services.validator.intake_nats import nats_intake_ctx
from services.validator.sentinels import EVENTS as SENTINEL_EVENTS
from services.validator.sentinels import sentinel_concurrency, sentinel_handler
from services.validator.submission import CONSUMER, GATHER_SECONDS, validate_handler
from services.validator.watcher import drop_watcher_ctx
from stamen.bus.consumer import ConsumerSpec, EventHandler
from stamen.bus.subjects import event_filter
from stamen.inputs.contexts import add_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.keys import POOL
from stamen.service.reconciler import ReconcilePass
from stamen.service.runner import base_app
from stamen.settings import Settings


def init_app(settings: Settings, *, intake: IntakeSettings | None = None) -> web.Application:
    def specs(app: web.Application) -> list[ConsumerSpec]:
        def spec(
            durable: str, events: list[str], handler: EventHandler, concurrency: int | None = None
        ) -> ConsumerSpec:
            return ConsumerSpec(
                durable=durable,
                filter_subjects=[event_filter(e) for e in events],
                handler=handler,
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                concurrency=concurrency or settings.consumer_concurrency,
            )

        return [
            spec(
                CONSUMER,
                ["workset.submitted"],
                validate_handler(app, settings),
                concurrency=settings.validation_concurrency,
            ),
            spec(
                SENTINEL_CONSUMER,
                list(SENTINEL_EVENTS),
                sentinel_handler(app),
                concurrency=sentinel_concurrency(settings),
            ),
        ]

    def passes(app: web.Application) -> list[ReconcilePass]:
        return [reconcile.stale_submissions(app[POOL], validate_handler(app, settings), settings)]

    app = base_app(
        "validator", settings, consumers=specs, reconcile=passes, group_gather_seconds=GATHER_SECONDS
    )
    add_object_store(app, intake or IntakeSettings())
    app.cleanup_ctx.append(nats_intake_ctx)
    app.cleanup_ctx.append(drop_watcher_ctx)
    app.cleanup_ctx.append(bus_away_ctx)
    return app
