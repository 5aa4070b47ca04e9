"""Validator wiring: consumes workset.submitted (validated+queued or rejected, the tenant's storage quota
included), keeps the Daylily sentinels of S3-dropped worksets true, answers NATS intake requests and
watches the drop buckets."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.validator import handlers, reconcile
from services.validator.checks import CheckResult, check_submission
from services.validator.intake_nats import nats_intake_ctx
from services.validator.watcher import drop_watcher_ctx
from stamen.bus.consumer import ConsumerSpec, EventHandler
from stamen.bus.subjects import event_filter
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE, add_object_store
from stamen.inputs.quota import storage_quota_findings
from stamen.inputs.settings import IntakeSettings
from stamen.inputs.storage import StorageChecker
from stamen.service.idempotent import idempotent
from stamen.service.keys import POOL
from stamen.service.reconciler import ReconcilePass
from stamen.service.runner import base_app
from stamen.settings import Settings
from stamen.worksets import Finding

CONSUMER = "validator-submitted"
SENTINEL_CONSUMER = "validator-sentinels"
SENTINEL_EVENTS = ("workset.rejected", "workset.completed", "workset.dead_lettered", "workset.cancelled")


def submission_check(app: web.Application, settings: Settings) -> handlers.Check:
    """Validation of a spec as the validator runs it: storage, the tenant's quota, the rules."""

    async def quota(tenant_id: str) -> list[Finding]:
        return await storage_quota_findings(app[POOL], app[OBJECT_STORE].client, tenant_id)

    async def check(spec: dict[str, Any], tenant_id: str) -> CheckResult:
        checker = StorageChecker(app[OBJECT_STORE], app[INTAKE_SETTINGS])
        return await check_submission(
            spec,
            tenant_id=tenant_id,
            checker=checker,
            cluster_region=settings.region,
            enable_validation=settings.enable_validation,
            quota=quota,
        )

    return check


def validate_handler(app: web.Application, settings: Settings) -> EventHandler:
    """workset.submitted's handler, for the consumer and for the reconciler alike."""
    check = submission_check(app, settings)
    return handlers.validate_submitted(CONSUMER, lambda: app[POOL], check, max_deliver=settings.max_deliver)


def init_app(settings: Settings, *, intake: IntakeSettings | None = None) -> web.Application:
    def specs(app: web.Application) -> list[ConsumerSpec]:
        def spec(durable: str, events: list[str], handler: EventHandler) -> ConsumerSpec:
            return ConsumerSpec(
                durable=durable,
                filter_subjects=[event_filter(e) for e in events],
                handler=handler,
                ack_wait_seconds=settings.ack_wait_seconds,
                max_deliver=settings.max_deliver,
                concurrency=settings.consumer_concurrency,
            )

        return [
            spec(CONSUMER, ["workset.submitted"], validate_handler(app, settings)),
            spec(
                SENTINEL_CONSUMER,
                list(SENTINEL_EVENTS),
                idempotent(
                    SENTINEL_CONSUMER, lambda: app[POOL], handlers.write_sentinel(lambda: app[OBJECT_STORE])
                ),
            ),
        ]

    def passes(app: web.Application) -> list[ReconcilePass]:
        return [reconcile.stale_submissions(app[POOL], validate_handler(app, settings), settings)]

    app = base_app("validator", settings, consumers=specs, reconcile=passes)
    add_object_store(app, intake or IntakeSettings())
    app.cleanup_ctx.append(nats_intake_ctx)
    app.cleanup_ctx.append(drop_watcher_ctx)
    return app
