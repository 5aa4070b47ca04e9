"""Notifier wiring, as a table of contents: four durable consumers (one per event family) plan
deliveries in their inbox transaction, shared by the four (group commit), after one read that says
whether anyone hears of the event at all; the delivery worker sends them, one loop per channel."""

from __future__ import annotations

from aiohttp import web

from services.notifier import handlers
from services.notifier.channels import NOTIFY_SETTINGS, delivery_ctx
from stamen.bus.consumer import ConsumerSpec
from stamen.bus.subjects import event_filter
from stamen.notifications.settings import NotifySettings
from stamen.service.idempotent import GroupCommit
from stamen.service.keys import POOL
from stamen.service.runner import base_app
from stamen.settings import Settings

# durable name -> the event types it hears; workset.dead_lettered is heard twice: the tenant is told
# its workset failed for good, the operators are told when dead letters pile up.
FAMILIES = {
    "notifier-intake": ("workset.submitted", "workset.validated", "workset.rejected"),
    "notifier-runs": ("workset.started", "workset.completed", "workset.cancelled", "workset.queued"),
    "notifier-failures": ("workset.retry_scheduled", "workset.dead_lettered"),
    handlers.OPERATIONS: ("region.health_changed", "cluster.drained", "workset.dead_lettered"),
}
# Planning reads and writes PostgreSQL only (nothing is sent in it), and nobody waits on it: the four
# consumers' calls gather for up to 100 ms into one transaction of up to 64 (one transaction per event
# made this service ~5.6 of the stack's ~30 transactions per workset). More calls in flight per
# consumer than elsewhere, since each now waits for its group rather than holding a connection.
GATHER_SECONDS = 0.1
MAX_GROUP = 64
CONCURRENCY_FACTOR = 4


def init_app(settings: Settings, notify: NotifySettings | None = None) -> web.Application:
    notify = notify or NotifySettings()

    def specs(app: web.Application) -> list[ConsumerSpec]:
        group = GroupCommit(lambda: app[POOL], max_group=MAX_GROUP, gather_seconds=GATHER_SECONDS)
        handlers_by = handlers.consumer_handlers(
            lambda: app[POOL], notify, FAMILIES, enabled=settings.enable_notifications, group=group
        )
        return [
            ConsumerSpec(
                durable=durable,
                filter_subjects=[event_filter(t) for t in types],
                handler=handlers_by[durable],
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                concurrency=settings.consumer_concurrency * CONCURRENCY_FACTOR,
            )
            for durable, types in FAMILIES.items()
        ]

    app = base_app("notifier", settings, consumers=specs)
    app[NOTIFY_SETTINGS] = notify
    app.cleanup_ctx.append(delivery_ctx)
    return app
