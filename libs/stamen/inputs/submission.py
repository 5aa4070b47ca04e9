"""Document intake shared by the HTTP API and the NATS request/reply subject: bytes in, a workset or
findings out. Both then call `stamen.intake.submit_workset`, the one path every intake uses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import asyncpg

from stamen.domain.workset import check_tenant_id
from stamen.inputs.validation import run_sized
from stamen.intake import IntakeRefused, submit_workset
from stamen.tenancy import TenantBuckets, access_findings, tenant_buckets
from stamen.worksets import Finding, ImportResult, ValidationReport, import_form, validate_spec
from stamen.worksets.documents import Parsed, as_mapping, load_json_mapping, load_yaml_mapping

if TYPE_CHECKING:
    from stamen.bus.announce import Announce

Media = Literal["json", "yaml"]
# Printable ASCII without spaces: keys end up in logs, headers and a unique index.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class TenantRequired(IntakeRefused):
    code = "TENANT_REQUIRED"


class TenantInvalid(IntakeRefused):
    code = "TENANT_INVALID"


class IdempotencyKeyInvalid(IntakeRefused):
    code = "IDEMPOTENCY_KEY_INVALID"


def media_of(content_type: str | None) -> Media | None:
    """json / yaml from a Content-Type, None when it is neither."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in ("application/json", "text/json") or kind.endswith("+json"):
        return "json"
    if kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        return "yaml"
    return None


def parse_document(data: bytes | str, media: Media, *, source: str = "form") -> Parsed:
    if media == "yaml":
        return load_yaml_mapping(data, source=source)
    return load_json_mapping(data, source=source)


def import_for_tenant(
    document: bytes | str | Mapping[str, object],
    *,
    tenant: str | None,
    media: Media = "yaml",
    source: str = "form",
) -> ImportResult:
    """Import a form document; `tenant` (who submits) replaces whatever tenant the document names."""
    parsed = (
        as_mapping(document, source=source)
        if isinstance(document, Mapping)
        else parse_document(document, media, source=source)
    )
    if parsed.value is None:
        return ImportResult(spec=None, findings=parsed.findings)
    value = parsed.value if tenant is None else {**parsed.value, "tenant": tenant}
    return import_form(value, source=source)


def check_request(tenant: str | None, idempotency_key: str | None) -> str:
    if not tenant:
        raise TenantRequired(
            "say which tenant submits the workset (X-Stamen-Tenant header, or "
            "the subject stamen.intake.<tenant>)",
        )
    try:
        check_tenant_id(tenant)
    except ValueError as exc:
        raise TenantInvalid(str(exc)) from None
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise IdempotencyKeyInvalid(
            "Idempotency-Key must be 1-200 printable ASCII characters without spaces",
        )
    return tenant


@dataclass(frozen=True)
class SubmissionOutcome:
    accepted: bool
    findings: list[Finding] = field(default_factory=list)
    workset_id: str | None = None
    state: str | None = None
    created: bool = False

    def as_reply(self) -> dict[str, object]:
        """The JSON answer both the HTTP API and the NATS subject give."""
        if not self.accepted:
            return {
                "ok": False,
                "code": "VALIDATION_FAILED",
                "message": f"the workset has {sum(f.severity == 'error' for f in self.findings)} error(s); "
                "nothing was submitted",
                "details": {"findings": [f.model_dump() for f in self.findings]},
            }
        return {
            "ok": True,
            "workset_id": self.workset_id,
            "state": self.state,
            "created": self.created,
            "warnings": [f.model_dump() for f in self.findings],
        }


def _checked(
    document: bytes | str | Mapping[str, object],
    tenant: str,
    media: Media,
    source: str,
    rights: TenantBuckets,
) -> tuple[ImportResult, ValidationReport]:
    imported = import_for_tenant(document, tenant=tenant, media=media, source=source)
    prior = list(imported.findings)
    if imported.spec is not None:  # every S3 location must be in a bucket the tenant may use
        prior += access_findings(imported.spec, rights)
    return imported, validate_spec(imported.spec, dry_run=True, prior_findings=prior)


async def submit_document(
    pool: asyncpg.Pool,
    document: bytes | str | Mapping[str, object],
    *,
    media: Media,
    tenant: str | None,
    idempotency_key: str | None,
    region: str,
    source: str,
    actor: str,
    announce: Announce | None = None,
    rights: TenantBuckets | None = None,
) -> SubmissionOutcome:
    """Structural validation now (the caller hears of document errors at once); storage checks and the
    estimate follow in the validator service, which turns the workset into queued or rejected. An unusable
    request (tenant, idempotency key) raises IntakeRefused. `rights`: the tenant's buckets when the caller
    has read them already (the portal, with its customer row); else they are read here."""
    tenant = check_request(tenant, idempotency_key)
    # Parsing and checking grow with the document (a CPU second at 10,000 samples): off the event loop,
    # unless it is an already parsed document of a few samples (the API's), whose check costs less than
    # the trip to a thread and back (stamen.inputs.validation.run_sized).
    if rights is None or rights.tenant_id != tenant:
        rights = await tenant_buckets(pool, tenant)
    samples = document.get("samples") if isinstance(document, Mapping) else None
    imported, report = await run_sized(
        len(samples) if isinstance(samples, list) else None, _checked, document, tenant, media, source, rights
    )
    if imported.spec is None or not report.ok:
        return SubmissionOutcome(accepted=False, findings=report.findings)
    spec = imported.spec
    result = await submit_workset(
        pool,
        tenant_id=tenant,
        name=spec.name,
        spec=spec.model_dump(mode="json", exclude_none=True),
        region=region,
        source=source,
        actor=actor,
        priority=spec.priority,
        idempotency_key=idempotency_key,
        announce=announce,
    )
    return SubmissionOutcome(
        accepted=True,
        findings=report.findings,
        workset_id=result.workset_id,
        state=result.state,
        created=result.created,
    )
