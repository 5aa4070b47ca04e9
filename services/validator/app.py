"""Validator wiring: consumes workset.submitted (validated+queued or rejected; the tenant's buckets and storage
quota included), keeps S3-dropped worksets' Daylily sentinels true, answers NATS intake, watches drop buckets,
validates from PostgreSQL while NATS is away."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from services.validator import handlers, reconcile
from services.validator.bus_away import bus_away_ctx
from services.validator.handlers import SENTINEL_CONSUMER
from services.validator.intake_nats import nats_intake_ctx
from services.validator.submission import CONSUMER, validate_handler
from services.validator.watcher import drop_watcher_ctx
from stamen.bus.consumer import ConsumerSpec, EventHandler
from stamen.bus.subjects import event_filter
from stamen.inputs.contexts import OBJECT_STORE, add_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.idempotent import GroupCommit
from stamen.service.keys import POOL
from stamen.service.reconciler import ReconcilePass
from stamen.service.runner import base_app
from stamen.settings import Settings

SENTINEL_GATHER_SECONDS = 0.5
SENTINEL_MAX_GROUP = 64
SENTINEL_CONCURRENCY_FACTOR = 8
SENTINEL_EVENTS = ("workset.rejected", "workset.completed", "workset.dead_lettered", "workset.cancelled")


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

        # Every terminal workset's event comes here (one per workset, so they come slowly), and almost
        # none was dropped via S3: their read (and the few sentinels' records) gather for up to 0.5 s,
        # since nobody waits on them (a Daylily sentinel appears that much later); the validation's own
        # read and decision gather for the service's 5 ms (app[INBOX_GROUP]).
        sentinel_group = GroupCommit(
            lambda: app[POOL], max_group=SENTINEL_MAX_GROUP, gather_seconds=SENTINEL_GATHER_SECONDS
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
                partial(
                    handlers.keep_sentinel,
                    pool=lambda: app[POOL],
                    store=lambda: app[OBJECT_STORE],
                    group=sentinel_group,
                ),
                concurrency=settings.consumer_concurrency * SENTINEL_CONCURRENCY_FACTOR,
            ),
        ]

    def passes(app: web.Application) -> list[ReconcilePass]:
        return [reconcile.stale_submissions(app[POOL], validate_handler(app, settings), settings)]

    app = base_app("validator", settings, consumers=specs, reconcile=passes)
    add_object_store(app, intake or IntakeSettings())
    app.cleanup_ctx.append(nats_intake_ctx)
    app.cleanup_ctx.append(drop_watcher_ctx)
    app.cleanup_ctx.append(bus_away_ctx)
    return app
