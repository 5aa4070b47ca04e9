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
from stamen.inputs.quota import customer_quota_findings
from stamen.inputs.storage import StorageChecker
from stamen.inputs.tenant import TenantFacts
from stamen.service.keys import INBOX_GROUP, POOL
from stamen.settings import Settings
from stamen.worksets import Finding

CONSUMER = "validator-submitted"
# The validator's group commit (app[INBOX_GROUP]: the `validating` read and the decision) starts a group at
# once instead of waiting out a window: someone waits on each call (submitted -> queued), the messages of
# one fetch still join the same group (their handlers run before the group's task does), and calls that
# arrive while a group commits make up the next one. Was the services' 5 ms: two windows per workset.
GATHER_SECONDS = 0.0


def submission_check(app: web.Application, settings: Settings) -> handlers.Check:
    """Validation of a spec as the validator runs it: the tenant's buckets and quota, storage, the rules."""

    async def check(spec: dict[str, Any], tenant: TenantFacts) -> CheckResult:
        async def quota(tenant_id: str) -> list[Finding]:
            return await customer_quota_findings(tenant.customer, app[OBJECT_STORE].client, tenant_id)

        checker = StorageChecker(app[OBJECT_STORE], app[INTAKE_SETTINGS])
        return await check_submission(
            spec,
            tenant_id=tenant.tenant_id,
            checker=checker,
            cluster_region=settings.region,
            rights=tenant.rights,
            enable_validation=settings.enable_validation,
            quota=quota,
        )

    return check


def validate_handler(app: web.Application, settings: Settings) -> EventHandler:
    """workset.submitted's handler, for the consumer and for the reconciler alike."""
    check = submission_check(app, settings)
    return functools.partial(
        handlers.validate_submitted, pool=lambda: app[POOL], check=check,
        max_deliver=settings.max_deliver, group=app.get(INBOX_GROUP),
    )  # fmt: skip
