"""Diagnostics wiring: consumes workset.failed, emits workset.diagnosed."""

from __future__ import annotations

from aiohttp import web

from services.diagnostics import handlers, reconcile
from stamen.bus.consumer import ConsumerSpec
from stamen.bus.subjects import event_filter
from stamen.diagnostics.classifier import index_catalog
from stamen.service.idempotent import idempotent
from stamen.service.keys import INBOX_GROUP, POOL
from stamen.service.reconciler import ReconcilePass
from stamen.service.runner import base_app
from stamen.settings import Settings

CONSUMER = "diagnostics-failed"


def init_app(settings: Settings) -> web.Application:
    index_catalog()  # at start-up, not at the first failure

    def specs(app: web.Application) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                durable=CONSUMER,
                filter_subjects=[event_filter("workset.failed")],
                handler=idempotent(
                    CONSUMER, lambda: app[POOL], handlers.diagnose_failure, group=app[INBOX_GROUP]
                ),
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                concurrency=settings.consumer_concurrency,
            )
        ]

    def passes(app: web.Application) -> list[ReconcilePass]:
        return [reconcile.undiagnosed_failures(CONSUMER, app[POOL], settings)]

    return base_app("diagnostics", settings, consumers=specs, reconcile=passes)
