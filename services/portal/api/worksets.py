"""Workset endpoints: submit, validate, generate Daylily files, the JSON Schema, one workset's state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.portal.api.errors import ApiError
from services.portal.api.requests import IDEMPOTENCY_HEADER, body_media, flag, read_body, tenant_header
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.repository import IntakeRepository
from stamen.inputs.storage import StorageChecker
from stamen.inputs.submission import IntakeRefused, import_for_tenant, submit_document
from stamen.inputs.validation import validate_imported
from stamen.service.keys import POOL, SETTINGS
from stamen.store.errors import WorksetNotFound
from stamen.store.unit_of_work import UnitOfWork
from stamen.worksets import WorksetSpec, export_daylily
from stamen.worksets.findings import has_errors

ACTOR = "api"


def _findings_error(findings: list[dict[str, Any]], message: str) -> ApiError:
    return ApiError(422, "VALIDATION_FAILED", message, {"findings": findings})


async def submit(request: web.Request) -> web.Response:
    media = body_media(request)
    body = await read_body(request)
    try:
        outcome = await submit_document(
            request.app[POOL], body, media=media, tenant=tenant_header(request),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER), region=request.app[SETTINGS].region,
            source="api", actor=ACTOR)
    except IntakeRefused as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    if not outcome.accepted:
        raise _findings_error([f.model_dump() for f in outcome.findings], str(outcome.as_reply()["message"]))
    reply = outcome.as_reply()
    location = f"/api/v1/worksets/{outcome.workset_id}"
    return web.json_response({**reply, "links": {"self": location}}, status=201 if outcome.created else 200,
                             headers={"Location": location})


async def validate(request: web.Request) -> web.Response:
    dry_run, strict = flag(request, "dry_run"), flag(request, "strict")
    media = body_media(request)
    imported = import_for_tenant(await read_body(request), tenant=tenant_header(request), media=media)
    checker = None if dry_run else StorageChecker(request.app[OBJECT_STORE], request.app[INTAKE_SETTINGS])
    report = await validate_imported(imported, checker=checker, cluster_region=request.app[SETTINGS].region,
                                     strict=strict, dry_run=dry_run)
    return web.json_response(report.model_dump(mode="json"))


async def generate_yaml(request: web.Request) -> web.Response:
    media = body_media(request)
    imported = import_for_tenant(await read_body(request), tenant=tenant_header(request), media=media)
    if imported.spec is None or has_errors(imported.findings):
        raise _findings_error([f.model_dump() for f in imported.findings], "the spec cannot be read; nothing "
                              "was generated")
    files = export_daylily(imported.spec)
    findings = [*imported.findings, *files.findings]
    return web.json_response({"ok": not has_errors(findings), "files": files.files,
                              "findings": [f.model_dump() for f in findings]})


async def schema(_: web.Request) -> web.Response:
    return web.json_response(WorksetSpec.model_json_schema())


async def show(request: web.Request) -> web.Response:
    workset_id = request.match_info["workset_id"]
    not_found = ApiError(404, "WORKSET_NOT_FOUND", f"workset {workset_id!r} does not exist")
    async with UnitOfWork(request.app[POOL]) as uow:
        try:
            ws = await uow.worksets.get(workset_id)
        except WorksetNotFound:
            raise not_found from None
        tenant = tenant_header(request)
        if tenant is not None and tenant != ws.tenant_id:
            raise not_found  # another tenant's workset is not even confirmed to exist
        history = await uow.worksets.history(workset_id)
        validation = await IntakeRepository(uow.connection).validation_for(workset_id)
    return web.json_response({
        "id": ws.id, "tenant": ws.tenant_id, "name": ws.name, "state": ws.state.value, "priority": ws.priority,
        "region": ws.region, "version": ws.version, "idempotency_key": ws.idempotency_key, "spec": ws.spec,
        "validation": validation,
        "history": [{"version": h.version, "from_state": h.from_state, "to_state": h.to_state, "actor": h.actor,
                     "reason": h.reason, "event_id": h.event_id and str(h.event_id), "at": h.at.isoformat()}
                    for h in history],
    })
