"""New workset: the form (samples table with rows added, pasted from a sheet or read from a Daylily
manifest; FASTQs uploaded straight to the tenant's bucket), validated as you type with findings at the field
they concern and the cost/duration estimate, then submitted through the API's own path (`submit_for`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from services.portal.api.access import principal_of, tenant_for
from services.portal.api.errors import ApiError
from services.portal.api.text import require_storable
from services.portal.api.worksets import submit_for, validate_for
from services.portal.web.buckets import buckets_for
from services.portal.web.render import render, see_other
from services.portal.web.specform import (
    SpecForm,
    choices,
    document,
    read_form,
    rows_from_manifest,
    rows_from_sheet,
)
from stamen.customers.repository import CustomerRepository
from stamen.service.keys import POOL
from stamen.worksets.rules import ValidationReport

MAX_MANIFEST_BYTES = 2 * 1024 * 1024


async def _tenant(request: web.Request, form: SpecForm) -> str | None:
    """The customer's own tenant; an operator says which tenant the workset is for (None until chosen)."""
    principal = principal_of(request)
    if not principal.is_operator:
        return principal.customer_id
    chosen = form.value("tenant") or request.query.get("tenant", "")
    return tenant_for(request, chosen) if chosen else None


async def _context(
    request: web.Request, form: SpecForm, tenant: str | None, report: ValidationReport | None = None
) -> dict[str, Any]:
    buckets = await buckets_for(request, tenant)
    tenants: list[str] = []
    if principal_of(request).is_operator:
        async with request.app[POOL].acquire() as conn:
            tenants = [
                c.customer_id for c in await CustomerRepository(conn).page(status=None, after=None, limit=500)
            ]
    return {
        "form": form,
        "tenant": tenant,
        "tenants": tenants,
        "report": report,
        "upload_bucket": buckets[0].bucket if buckets else None,
        **choices(),
    }


async def form(request: web.Request) -> web.Response:
    blank = SpecForm(
        values={"pipeline": "fastq-qc", "reference_genome": "hg38", "priority": "normal", "max_retries": "3"}
    )
    tenant = await _tenant(request, blank)
    if tenant:
        blank.values["tenant"] = tenant
    return await render(request, "new/page.html", await _context(request, blank, tenant))


async def _validated(request: web.Request, f: SpecForm, tenant: str, *, storage: bool) -> ValidationReport:
    doc = document(f, tenant)
    require_storable(doc, "form")
    report = await validate_for(request, doc, media="json", tenant=tenant, dry_run=not storage)
    f.findings = list(report.findings)
    return report


async def check(request: web.Request) -> web.Response:
    """htmx: the findings and estimate for the form as it is now, swapped in at each field."""
    f = read_form(await request.post())
    tenant = await _tenant(request, f)
    report = await _validated(request, f, tenant, storage=True) if tenant else None
    return await render(request, "new/_check.html", await _context(request, f, tenant, report))


async def submit(request: web.Request) -> web.Response:
    posted = await request.post()
    f = read_form(posted)
    tenant = await _tenant(request, f)
    action = str(posted.get("action", "submit"))
    if action == "add_row":
        f.samples.append({})
    elif action.startswith("remove_row:") and len(f.samples) > 1:
        index = action.partition(":")[2]
        if index.isdigit() and int(index) < len(f.samples):
            f.samples.pop(int(index))
    elif action == "use_sheet":
        rows, f.notes = rows_from_sheet(f.value("sheet"))
        f.samples = rows or f.samples
    elif action in ("submit", "validate") and tenant:
        report = await _validated(request, f, tenant, storage=True)
        if action == "submit" and report.ok:
            doc = document(f, tenant)
            outcome = await submit_for(
                request, doc, media="json", tenant=tenant, idempotency_key=None, source="portal"
            )
            if outcome.accepted:
                see_other(f"/worksets/{outcome.workset_id}", notice="submitted")
            f.findings = list(outcome.findings)
        status = 200 if report.ok else 422
        return await render(
            request, "new/page.html", await _context(request, f, tenant, report), status=status
        )
    elif action in ("submit", "validate"):
        raise ApiError(400, "TENANT_REQUIRED", "choose the tenant the workset is for")
    return await render(request, "new/page.html", await _context(request, f, tenant))


async def manifest(request: web.Request) -> web.Response:
    """The form again with its samples read from an uploaded Daylily manifest (multipart)."""
    posted = await request.post()
    f = read_form(posted)
    tenant = await _tenant(request, f)
    upload = posted.get("manifest")
    data = upload.file.read(MAX_MANIFEST_BYTES + 1) if isinstance(upload, FileField) else b""
    if not data:
        f.notes = ["Choose a Daylily manifest file (stage_samples.tsv / analysis_samples.tsv) first."]
    elif len(data) > MAX_MANIFEST_BYTES:
        f.notes = [f"The manifest is larger than {MAX_MANIFEST_BYTES // 1024 // 1024} MB."]
    else:
        rows, f.notes = rows_from_manifest(data)
        f.samples = rows or f.samples
    return await render(request, "new/page.html", await _context(request, f, tenant))
