"""Scheduler wiring: admission, dispatch, job monitoring, durable timers, retry decisions."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from services.scheduler import handlers, reconcile
from services.scheduler.runtime import LOOP, scheduler_ctx
from stamen.bus.consumer import ConsumerSpec, Delivery
from stamen.bus.subjects import event_filter
from stamen.events.envelope import Envelope
from stamen.service.idempotent import idempotent
from stamen.service.keys import POOL
from stamen.service.reconciler import ReconcilePass
from stamen.service.runner import base_app
from stamen.settings import Settings


def init_app(settings: Settings) -> web.Application:
    decide_retry = partial(handlers.decide_retry, policy=handlers.retry_policy(settings))

    def specs(app: web.Application) -> list[ConsumerSpec]:
        async def wake(_: Envelope, __: Delivery) -> None:
            if LOOP in app:  # queued events only wake the loop: the queue itself is in PostgreSQL
                app[LOOP].wake()

        return [
            ConsumerSpec(
                "scheduler-queued",
                [event_filter("workset.queued")],
                wake,
                concurrency=1,
                deliver_new_only=True,
            ),
            ConsumerSpec(  # a region went down or came back: evacuate or admit now, not at the next poll
                "scheduler-regions",
                [event_filter("region.health_changed")],
                wake,
                concurrency=1,
                deliver_new_only=True,
            ),
            ConsumerSpec(
                "scheduler-diagnosed",
                [event_filter("workset.diagnosed")],
                idempotent("scheduler-diagnosed", lambda: app[POOL], decide_retry),
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
            ),
        ]

    def passes(app: web.Application) -> list[ReconcilePass]:
        return [
            reconcile.pending_retry_decisions("scheduler-diagnosed", app[POOL], decide_retry, settings),
            reconcile.lost_retry_timers(app[POOL], settings),
        ]

    app = base_app("scheduler", settings, consumers=specs, reconcile=passes)
    app.cleanup_ctx.append(scheduler_ctx)
    return app
