"""Workset endpoints: submit, list, show, cancel, retry, archive, validate, Daylily files, the JSON Schema."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from services.portal.api import models as m
from services.portal.api.access import (
    acting_tenant,
    actor_of,
    body,
    can_see,
    principal_of,
    query,
    reply,
    tenant_not_found,
    visible_filter,
)
from services.portal.api.context import SECURITY
from services.portal.api.errors import ApiError
from services.portal.api.requests import IDEMPOTENCY_HEADER, TENANT_HEADER, body_media, read_body
from services.portal.api.text import problem_of, require_storable
from stamen import commands
from stamen.bus.announce import announcer
from stamen.customers import StorageNotMeasured
from stamen.customers.model import CustomerNotFound
from stamen.customers.usage import check_storage_of, required_customer
from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.repository import IntakeRepository
from stamen.inputs.storage import StorageChecker
from stamen.inputs.submission import (
    Media,
    SubmissionOutcome,
    check_request,
    import_for_tenant,
    parse_document,
    submit_document,
)
from stamen.inputs.tenant import tenant_facts
from stamen.inputs.validation import validate_imported
from stamen.service.keys import BUS, POOL, SETTINGS
from stamen.store.errors import WorksetNotFound
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import TenantBuckets, tenant_buckets
from stamen.worksets import WorksetSpec, export_daylily
from stamen.worksets.findings import has_errors
from stamen.worksets.rules import ValidationReport

log = structlog.get_logger(__name__)


def _findings_error(findings: list[dict[str, Any]], message: str) -> ApiError:
    return ApiError(422, "VALIDATION_FAILED", message, {"findings": findings})


def _not_found(workset_id: str) -> ApiError:
    return ApiError(404, "WORKSET_NOT_FOUND", f"workset {workset_id!r} does not exist")


def request_tenant(request: web.Request) -> str | None:
    """Whose workset this is: a customer's own tenant (another one named in the header is not found);
    an operator names it in X-Stamen-Tenant."""
    principal = principal_of(request)
    header = (request.headers.get(TENANT_HEADER) or "").strip() or None
    if not principal.is_operator and header is not None and header != principal.customer_id:
        raise tenant_not_found(header)
    return acting_tenant(request)


async def submit(request: web.Request) -> web.Response:
    media = body_media(request)
    tenant = request_tenant(request)
    idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
    check_request(tenant, idempotency_key)  # IntakeRefused is a CodedError: the middleware answers it
    document = await _document(request, media)
    outcome = await submit_for(request, document, media=media, tenant=tenant, idempotency_key=idempotency_key)
    if not outcome.accepted:
        raise _findings_error([f.model_dump() for f in outcome.findings], str(outcome.as_reply()["message"]))
    location = f"/api/v1/worksets/{outcome.workset_id}"
    assert outcome.workset_id is not None and outcome.state is not None
    answer = m.SubmitResponse(
        ok=True,
        workset_id=outcome.workset_id,
        state=outcome.state,
        created=outcome.created,
        warnings=outcome.findings,
        links=m.Links(self=location),
    )
    return reply(answer, 201 if outcome.created else 200, {"Location": location})


async def submit_for(
    request: web.Request,
    document: bytes | Mapping[str, object],
    *,
    media: Media,
    tenant: str | None,
    idempotency_key: str | None,
    source: str = "api",
) -> SubmissionOutcome:
    """Submit a workset document for `tenant` (the API's POST /worksets and the portal's New page): the
    storage quota first, then the intake every path uses. Refusals are CodedErrors (IntakeRefused, the
    quota's); findings are returned."""
    tenant = check_request(tenant, idempotency_key)
    security = request.app[SECURITY]
    # Its customer row (the quota) and its buckets (what the document may name) in one statement.
    facts = await tenant_facts(request.app[POOL], tenant)
    try:  # refuse at once when the tenant's bucket is already over its storage quota
        customer = required_customer(facts.customer, tenant)
        await check_storage_of(customer, security.s3, cache=security.bucket_usage)
    except CustomerNotFound:
        if security.auth.auth_enabled:
            raise
        # local demo: tenants need not be onboarded customers, so they have no quota
    except StorageNotMeasured as exc:
        # Not a reason to refuse: the validator checks the quota again before queueing, and retries a
        # bucket it cannot list before it rejects the workset (SNF-OBJ-006).
        log.warning("portal.storage_quota_not_checked", tenant=tenant, error=str(exc))
    return await submit_document(
        request.app[POOL],
        document,
        media=media,
        tenant=tenant,
        idempotency_key=idempotency_key,
        region=request.app[SETTINGS].region,
        source=source,
        actor=actor_of(request),
        announce=announcer(bus) if (bus := request.app.get(BUS)) is not None else None,
        rights=facts.rights,
    )


async def _document(request: web.Request, media: Media) -> bytes | dict[str, object]:
    """The workset document of the body, parsed once here so that text the database cannot store (or S3
    take as a key) is refused naming its field (TEXT_NOT_STORABLE) before anything uses it. A document
    that does not parse is returned as bytes: the intake reports its findings as for any other."""
    raw = await read_body(request)
    parsed = parse_document(raw, media)
    if parsed.value is None:
        return raw
    require_storable(parsed.value, "body")
    return raw if parsed.findings else parsed.value


async def validate(request: web.Request) -> web.Response:
    q = query(request, m.ValidateQuery)
    media = body_media(request)
    document = await _document(request, media)
    report = await validate_for(
        request, document, media=media, tenant=request_tenant(request), strict=q.strict, dry_run=q.dry_run
    )
    return web.json_response(report.model_dump(mode="json"))


async def validate_for(
    request: web.Request,
    document: bytes | Mapping[str, object],
    *,
    media: Media,
    tenant: str | None,
    strict: bool = False,
    dry_run: bool = False,
) -> ValidationReport:
    """Validate a workset document for `tenant` (the API's validate endpoint and the portal's forms)."""
    imported = import_for_tenant(document, tenant=tenant, media=media)
    checker = None if dry_run else StorageChecker(request.app[OBJECT_STORE], request.app[INTAKE_SETTINGS])
    # The tenant's bucket rights, so a location outside them is a finding and is never fetched: what S3
    # would say about another tenant's object (exists, its size) must not reach the caller.
    owner = imported.spec.tenant if imported.spec is not None else None
    rights = await tenant_buckets(request.app[POOL], owner) if owner else TenantBuckets("")
    return await validate_imported(
        imported,
        checker=checker,
        cluster_region=request.app[SETTINGS].region,
        rights=rights,
        strict=strict,
        dry_run=dry_run,
    )


async def generate_yaml(request: web.Request) -> web.Response:
    media = body_media(request)
    imported = import_for_tenant(await _document(request, media), tenant=request_tenant(request), media=media)
    if imported.spec is None or has_errors(imported.findings):
        raise _findings_error(
            [f.model_dump() for f in imported.findings], "the spec cannot be read; nothing was generated"
        )
    files = export_daylily(imported.spec)
    findings = [*imported.findings, *files.findings]
    return reply(m.GenerateYamlResponse(ok=not has_errors(findings), files=files.files, findings=findings))


async def schema(_: web.Request) -> web.Response:
    return web.json_response(WorksetSpec.model_json_schema())


# --- reading --------------------------------------------------------------------------------------
def encode_cursor(created_at: datetime, workset_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{workset_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, workset_id = text.partition("|")
        at = datetime.fromisoformat(stamp)
        if not workset_id or at.tzinfo is None or problem_of(workset_id) is not None:
            raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "INVALID_PARAMETER", "cursor is not a next_cursor this API gave out", {"parameter": "cursor"}
        ) from None
    return at, workset_id


async def list_worksets(request: web.Request) -> web.Response:
    q = query(request, m.WorksetListQuery)
    tenant = visible_filter(request, q.tenant)
    after = decode_cursor(q.cursor) if q.cursor else None
    async with UnitOfWork(request.app[POOL]) as uow:
        rows = await uow.worksets.page(tenant_id=tenant, state=q.state, after=after, limit=q.limit + 1)
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        parked = await uow.dead_letters.reasons_for(
            [ws.id for ws, _ in rows if ws.state is WorksetState.DEAD_LETTERED]
        )
    items = [
        m.WorksetSummary(
            id=ws.id,
            tenant=ws.tenant_id,
            name=ws.name,
            state=ws.state.value,
            priority=ws.priority,
            region=ws.region,
            created_at=at,
            dead_letter_reason=parked.get(ws.id),
        )
        for ws, at in rows
    ]
    cursor = encode_cursor(rows[-1][1], rows[-1][0].id) if more and rows else None
    return reply(m.WorksetList(items=items, next_cursor=cursor))


async def detail(uow: UnitOfWork, ws: Workset) -> m.WorksetDetail:
    history = await uow.worksets.history(ws.id)
    validation = await IntakeRepository(uow.connection).validation_for(ws.id)
    diagnoses = await uow.diagnoses.for_workset(ws.id)
    actual = await uow.actuals.for_workset(ws.id)
    parked = await uow.dead_letters.get(ws.id) if ws.state is WorksetState.DEAD_LETTERED else None
    return m.WorksetDetail(
        id=ws.id,
        tenant=ws.tenant_id,
        name=ws.name,
        state=ws.state.value,
        priority=ws.priority,
        region=ws.region,
        version=ws.version,
        idempotency_key=ws.idempotency_key,
        cluster=ws.cluster,
        placement_reason=ws.placement_reason,
        placement_scores=ws.placement_scores,
        attempt=ws.attempt,
        retry_count=ws.retry_count,
        max_retries=ws.max_retries,
        cancel_requested_by=ws.cancel_requested_by,
        spec=ws.spec,
        validation=validation,
        actual=m.ActualOut.model_validate({k: v for k, v in actual.items() if k != "workset_id"})
        if actual
        else None,
        history=[
            m.HistoryItem(
                version=h.version,
                from_state=h.from_state,
                to_state=h.to_state,
                actor=h.actor,
                reason=h.reason,
                event_id=h.event_id,
                at=h.at,
            )
            for h in history
        ],
        diagnoses=[
            m.DiagnosisOut(
                attempt=d.attempt,
                code=d.code,
                retry_class=d.retry_class,
                retryable=d.retryable,
                step=d.step,
                candidates=d.candidates,
                report=d.report,
                created_at=d.created_at,
            )
            for d in diagnoses
        ],
        dead_letter=dead_letter_out(parked) if parked else None,
    )


def dead_letter_out(row: dict[str, Any]) -> m.DeadLetterOut:
    return m.DeadLetterOut.model_validate({k: row[k] for k in m.DeadLetterOut.model_fields})


async def visible_workset(request: web.Request, uow: UnitOfWork, *, for_update: bool = False) -> Workset:
    workset_id = request.match_info["workset_id"]
    try:
        ws = await uow.worksets.get(workset_id, for_update=for_update)
    except WorksetNotFound:
        raise _not_found(workset_id) from None
    if not can_see(request, ws.tenant_id):
        raise _not_found(workset_id)  # another tenant's workset is not even confirmed to exist
    return ws


async def show(request: web.Request) -> web.Response:
    async with UnitOfWork(request.app[POOL]) as uow:
        ws = await visible_workset(request, uow)
        return reply(await detail(uow, ws))


async def _check_visible(request: web.Request) -> str:
    async with UnitOfWork(request.app[POOL]) as uow:
        return (await visible_workset(request, uow)).id


# --- commands -------------------------------------------------------------------------------------
async def cancel(request: web.Request) -> web.Response:
    workset_id = await _check_visible(request)
    reason = (await body(request, m.CancelRequest, optional=True)).reason
    result = await commands.request_cancel(
        request.app[POOL], workset_id, actor=actor_of(request), reason=reason
    )
    return reply(m.CancelResponse(workset_id=result.workset_id, state=result.state, pending=result.pending))


async def requeue_changes(request: web.Request) -> dict[str, Any] | None:
    """The optional body of retry / DLQ requeue: {"changes": {...}}, only the keys the caller sent.

    The body model is RequeueChanges itself, so a bad change is REQUEST_INVALID here and what is passed on
    always parses again: commands.requeue never raises REQUEUE_CHANGE_INVALID for the API
    (services/portal/tests/test_requeue_body.py)."""
    changes = (await body(request, m.RequeueRequest, optional=True)).changes.model_dump(exclude_unset=True)
    return changes or None


async def requeue(
    request: web.Request,
    workset_id: str,
    changes: dict[str, Any] | None,
    *,
    missing: Callable[[str], ApiError] = _not_found,
) -> web.Response:
    try:
        state = await commands.requeue(
            request.app[POOL], workset_id, actor=actor_of(request), changes=changes
        )
    except WorksetNotFound:
        raise missing(workset_id) from None
    return reply(m.WorksetStateResponse(workset_id=workset_id, state=state))


async def retry(request: web.Request) -> web.Response:
    workset_id = await _check_visible(request)  # 404 for another tenant's workset, before reading the body
    return await requeue(request, workset_id, await requeue_changes(request))


async def archive(request: web.Request) -> web.Response:
    """Finished worksets (completed, failed, rejected, cancelled, dead-lettered) move to archived."""
    async with UnitOfWork(request.app[POOL]) as uow:
        ws = await visible_workset(request, uow)  # 404 for another tenant's workset
    state = await commands.archive(request.app[POOL], ws.id, actor=actor_of(request))
    return reply(m.WorksetStateResponse(workset_id=ws.id, state=state))
