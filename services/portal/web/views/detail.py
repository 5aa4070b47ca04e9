"""One workset: the full timeline, step progress per attempt, placement and its scores, estimate vs actual,
diagnoses with ranked codes, evidence and remediation, log tails, outputs with presigned download links,
cancel / retry / requeue-with-changes / archive, and its Daylily files. Another tenant's workset is a 404,
exactly as in the API (services.portal.api.worksets.visible_workset)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import structlog
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from services.portal.api.access import actor_of
from services.portal.api.errors import ApiError
from services.portal.api.worksets import detail as detail_model
from services.portal.api.worksets import visible_workset
from services.portal.web import live
from services.portal.web.buckets import download_link, list_objects, may_use, split_uri
from services.portal.web.render import render, see_other
from stamen import commands
from stamen.diagnostics.catalog import UnknownErrorCodeError, get_entry
from stamen.domain.lifecycle import ALLOWED_TRANSITIONS, WorksetState
from stamen.retry import RequeueChanges, RequeueChangesInvalid
from stamen.service.keys import POOL
from stamen.store.unit_of_work import UnitOfWork
from stamen.store.workset_queries import WorksetQueries
from stamen.worksets import WorksetSpec, export_daylily

log = structlog.get_logger(__name__)
S = WorksetState
MAX_OUTPUTS = 200


async def page(request: web.Request) -> web.Response:
    await live.remember_position(request)
    context = await _context(request)
    template = "workset/_body.html" if request.query.get("fragment") == "body" else "workset/detail.html"
    return await render(request, template, context)


async def _context(request: web.Request, requeue_error: str | None = None) -> dict[str, Any]:
    async with UnitOfWork(request.app[POOL]) as uow:
        ws = await visible_workset(request, uow)
        d = await detail_model(uow, ws)
        steps = await WorksetQueries(uow.connection).step_runs(ws.id)
    state = S(d.state)
    attempts: dict[int, list[dict[str, Any]]] = {}
    for step in steps:
        attempts.setdefault(step["attempt"], []).append(step)
    return {
        "ws": d,
        "attempts": sorted(attempts.items(), reverse=True),
        "diagnoses": [_diagnosis(x.model_dump()) for x in reversed(d.diagnoses)],
        "estimate": (d.validation or {}).get("estimate"),
        "findings": (d.validation or {}).get("findings") or [],
        "scores": sorted((d.placement_scores or {}).items(), key=lambda kv: -kv[1]),
        "outputs": await _outputs(request, d.tenant, d.spec.get("export_uri"))
        if state is S.COMPLETED
        else None,
        "daylily": _daylily(d.spec),
        "can_cancel": state in commands.CANCEL_NOW or state in commands.CANCEL_VIA_SCHEDULER,
        "cancel_pending": d.cancel_requested_by is not None,
        "can_retry": state in (S.FAILED, S.DEAD_LETTERED),
        "can_archive": S.ARCHIVED in ALLOWED_TRANSITIONS[state],
        "requeue_error": requeue_error,
        "priorities": ["urgent", "normal", "low"],
    }


def _diagnosis(doc: dict[str, Any]) -> dict[str, Any]:
    try:
        entry = get_entry(doc["code"])
        doc["name"], doc["remediation"], doc["docs_anchor"] = (
            entry.name,
            list(entry.remediation),
            entry.docs_anchor,
        )
    except UnknownErrorCodeError:  # a code from a newer catalog than this portal's: no remediation shown
        doc["name"], doc["remediation"], doc["docs_anchor"] = doc["code"], [], None
    return doc


async def _outputs(request: web.Request, tenant: str, export_uri: object) -> dict[str, Any] | None:
    """The files under the workset's export_uri, with download links, if the caller may read that bucket."""
    where = split_uri(export_uri) if isinstance(export_uri, str) else None
    if where is None:
        return None
    bucket, prefix = where
    if not await may_use(request, tenant, bucket, "read"):
        return {"uri": export_uri, "files": [], "error": "this bucket is not one of your buckets"}
    try:
        _, objects, truncated = await list_objects(request, bucket, prefix, delimiter="", limit=MAX_OUTPUTS)
    except (ClientError, BotoCoreError) as exc:
        log.warning("portal.outputs_not_listed", bucket=bucket, error=str(exc))
        return {"uri": export_uri, "files": [], "error": "the outputs could not be listed right now"}
    files = [
        {
            **o,
            "name": o["key"][len(prefix) :].lstrip("/") or o["key"],
            "url": await download_link(request, bucket, o["key"]),
        }
        for o in objects
    ]
    return {"uri": export_uri, "files": files, "error": None, "truncated": truncated}


def _daylily(spec: dict[str, Any]) -> dict[str, str]:
    try:
        return export_daylily(WorksetSpec.model_validate(spec)).files
    except ValidationError:
        return {}


async def daylily_file(request: web.Request) -> web.Response:
    """One generated Daylily file, or all three as daylily.zip."""
    name = request.match_info["name"]
    async with UnitOfWork(request.app[POOL]) as uow:
        ws = await visible_workset(request, uow)
    files = _daylily(ws.spec)
    if name == "daylily.zip":
        return zip_response(files, f"{ws.name}-daylily.zip")
    if name not in files:
        raise ApiError(
            404, "NOT_FOUND", f"no generated file {name!r}; there are {', '.join(files) or 'none'}"
        )
    return web.Response(
        text=files[name],
        content_type="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def zip_response(files: dict[str, str], filename: str) -> web.Response:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return web.Response(
        body=buffer.getvalue(),
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- actions -------------------------------------------------------------------------------------
async def _visible_id(request: web.Request) -> str:
    async with UnitOfWork(request.app[POOL]) as uow:
        return (await visible_workset(request, uow)).id


async def cancel(request: web.Request) -> web.Response:
    workset_id = await _visible_id(request)
    form = await request.post()
    result = await commands.request_cancel(
        request.app[POOL], workset_id, actor=actor_of(request), reason=str(form.get("reason", ""))[:500]
    )
    see_other(f"/worksets/{workset_id}", notice="cancel-requested" if result.pending else "cancelled")


async def archive(request: web.Request) -> web.Response:
    workset_id = await _visible_id(request)
    await commands.archive(request.app[POOL], workset_id, actor=actor_of(request))
    see_other(f"/worksets/{workset_id}", notice="archived")


def requeue_changes(form: Any) -> dict[str, Any] | None:
    """The changes a requeue form asks for: only fields filled in (empty = unchanged)."""
    changes: dict[str, Any] = {}
    for name in ("priority", "preferred_cluster"):
        if value := str(form.get(name, "")).strip():
            changes[name] = value
    for name, kind in (("max_retries", int), ("max_duration_seconds", int), ("memory_multiplier", float)):
        if value := str(form.get(name, "")).strip():
            try:
                changes[name] = kind(value)
            except ValueError:
                raise RequeueChangesInvalid(f"{name} must be a number, not {value!r}", field=name) from None
    if form.get("clear_duration"):
        changes["max_duration_seconds"] = None
    RequeueChanges.parse(changes)
    return changes or None


async def retry(request: web.Request) -> web.Response:
    """Retry (failed) or requeue with changes (failed or dead-lettered), as POST /api/v1/worksets/{id}/retry."""
    workset_id = await _visible_id(request)
    form = await request.post()
    try:
        changes = requeue_changes(form)
        await commands.requeue(request.app[POOL], workset_id, actor=actor_of(request), changes=changes)
    except RequeueChangesInvalid as exc:
        context = await _context(request, requeue_error=str(exc))
        return await render(request, "workset/detail.html", context, status=400)
    see_other(f"/worksets/{workset_id}", notice="retried")
