"""The YAML generator: the workset form turned into Daylily's three files (daylily_work.yaml, the analysis
manifest and the stage manifest) by stamen's exporter, validated as you type (no storage calls), and
downloadable one by one or as a zip."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from services.portal.api.access import principal_of
from services.portal.api.errors import ApiError
from services.portal.api.text import require_storable
from services.portal.web.render import render
from services.portal.web.specform import (
    SpecForm,
    choices,
    document,
    read_form,
    rows_from_manifest,
    rows_from_sheet,
)
from services.portal.web.views.detail import zip_response
from services.portal.web.views.submit import MAX_MANIFEST_BYTES
from stamen.inputs.submission import import_for_tenant
from stamen.worksets import export_daylily
from stamen.worksets.findings import has_errors
from stamen.worksets.rules import validate_spec


def _tenant(request: web.Request, form: SpecForm) -> str:
    principal = principal_of(request)
    return principal.customer_id or form.value("tenant") or "my-lab"


def generated(request: web.Request, f: SpecForm) -> dict[str, str]:
    """The three files, or {} when the form still has errors (its findings are then in `f.findings`)."""
    doc = document(f, _tenant(request, f))
    require_storable(doc, "form")
    imported = import_for_tenant(doc, tenant=doc["tenant"], media="json")
    report = validate_spec(imported.spec, dry_run=True, prior_findings=imported.findings)
    f.findings = list(report.findings)
    if imported.spec is None or not report.ok:
        return {}
    files = export_daylily(imported.spec)
    f.findings += files.findings
    return {} if has_errors(files.findings) else files.files


def _context(f: SpecForm, files: dict[str, str]) -> dict[str, Any]:
    return {
        "form": f,
        "files": files,
        "tenant": None,
        "tenants": [],
        "report": None,
        "upload_bucket": None,
        **choices(),
    }


async def form(request: web.Request) -> web.Response:
    blank = SpecForm(values={"pipeline": "germline", "reference_genome": "hg38", "priority": "normal"})
    return await render(request, "generator/page.html", _context(blank, {}))


async def generate(request: web.Request) -> web.Response:
    posted = await request.post()
    f = read_form(posted)
    action = str(posted.get("action", "generate"))
    if action == "add_row":
        f.samples.append({})
    elif action == "use_sheet":
        rows, f.notes = rows_from_sheet(f.value("sheet"))
        f.samples = rows or f.samples
    elif action == "manifest" and isinstance(upload := posted.get("manifest"), FileField):
        rows, f.notes = rows_from_manifest(upload.file.read(MAX_MANIFEST_BYTES))
        f.samples = rows or f.samples
    files = generated(request, f) if f.value("name") or action == "generate" else {}
    template = "generator/_result.html" if request.headers.get("HX-Request") else "generator/page.html"
    return await render(request, template, _context(f, files))


async def download(request: web.Request) -> web.Response:
    posted = await request.post()
    f = read_form(posted)
    files = generated(request, f)
    if not files:
        raise ApiError(422, "VALIDATION_FAILED", "the form has errors; nothing was generated")
    wanted = str(posted.get("file", "daylily.zip"))
    if wanted == "daylily.zip":
        return zip_response(files, f"{f.value('name') or 'workset'}-daylily.zip")
    if wanted not in files:
        raise ApiError(404, "NOT_FOUND", f"no generated file {wanted!r}")
    return web.Response(
        text=files[wanted],
        content_type="text/plain",
        headers={"Content-Disposition": f'attachment; filename="{wanted}"'},
    )
