"""The validator's handler of workset.submitted, wired to its adapters: the object store's storage
checks, the tenant's storage quota and the rules. The consumer and the reconciler share it."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from services.validator import handlers
from services.validator.checks import CheckResult, check_submission
from stamen.bus.consumer import EventHandler
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.quota import storage_quota_findings
from stamen.inputs.storage import StorageChecker
from stamen.service.keys import POOL
from stamen.settings import Settings
from stamen.tenancy import tenant_buckets
from stamen.worksets import Finding

CONSUMER = "validator-submitted"


def submission_check(app: web.Application, settings: Settings) -> handlers.Check:
    """Validation of a spec as the validator runs it: the tenant's buckets and quota, storage, the rules."""

    async def quota(tenant_id: str) -> list[Finding]:
        return await storage_quota_findings(app[POOL], app[OBJECT_STORE].client, tenant_id)

    async def check(spec: dict[str, Any], tenant_id: str) -> CheckResult:
        checker = StorageChecker(app[OBJECT_STORE], app[INTAKE_SETTINGS])
        return await check_submission(
            spec,
            tenant_id=tenant_id,
            checker=checker,
            cluster_region=settings.region,
            rights=await tenant_buckets(app[POOL], tenant_id),
            enable_validation=settings.enable_validation,
            quota=quota,
        )

    return check


def validate_handler(app: web.Application, settings: Settings) -> EventHandler:
    """workset.submitted's handler, for the consumer and for the reconciler alike."""
    check = submission_check(app, settings)
    return functools.partial(
        handlers.validate_submitted, consumer=CONSUMER, pool=lambda: app[POOL], check=check,
        max_deliver=settings.max_deliver,
    )  # fmt: skip
