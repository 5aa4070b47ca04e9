"""Which S3 buckets a tenant may use, and the one rule every path asks before it touches a URI a tenant chose.

A tenant may use its own bucket (`customers.s3_bucket`, made at onboarding; read-write) and the buckets an
operator granted it explicitly (`bucket_grants`: read-only, e.g. a shared reference bucket, or read-write).
Nothing else: stamen's own AWS role can usually read far more than any one tenant should, so the check is
made here, from data in PostgreSQL, and never by asking S3 (an answer from S3 would tell the caller whether
another tenant's object exists).

`may_access(rights, "s3://bucket/key", "read" | "write")` is the rule. `access_findings(spec, rights)` applies
it to every S3 location a workset touches and names each refused field (`S3-ACCESS-001` read,
`S3-ACCESS-002` write), with how to get access. Pure: the caller loads `TenantBuckets` (stamen.tenancy.grants).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from stamen.worksets.findings import Finding, finding
from stamen.worksets.rules import valid_bucket_name
from stamen.worksets.spec import WorksetSpec

Mode = Literal["read", "write"]
GrantAccess = Literal["read-only", "read-write"]
GRANT_ACCESS: tuple[GrantAccess, ...] = ("read-only", "read-write")
Source = Literal["own", "grant"]


@dataclass(frozen=True)
class BucketRight:
    """One bucket a tenant may use: its own (from onboarding) or granted by an operator."""

    bucket: str
    access: GrantAccess
    source: Source
    granted_by: str | None = None
    note: str = ""

    def allows(self, mode: Mode) -> bool:
        return mode == "read" or self.access == "read-write"


@dataclass(frozen=True)
class TenantBuckets:
    """Every bucket one tenant may use. A tenant without any (not a customer, nothing granted) may use none."""

    tenant_id: str
    rights: tuple[BucketRight, ...] = ()

    def right(self, bucket: str) -> BucketRight | None:
        """The widest right the tenant has on `bucket` (its own bucket is read-write)."""
        found = [r for r in self.rights if r.bucket == bucket]
        return max(found, key=lambda r: r.access == "read-write", default=None)

    @property
    def own(self) -> list[str]:
        return [r.bucket for r in self.rights if r.source == "own"]


@lru_cache(maxsize=4096)
def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    """(bucket, key) of a well-formed `s3://bucket[/key]`, else None. Kept per URI (a pure function of it):
    the scheduler asks it of every location of a workset before every step, and the bucket name rule
    (a regular expression, then an IP address parse that raises for any ordinary name) costs more than
    the look-up."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    return (bucket, key) if valid_bucket_name(bucket) else None


def may_access(rights: TenantBuckets, uri: str, mode: Mode) -> bool:
    """May this tenant `mode` (read or write) the S3 object or prefix `uri`? Anything that is not a
    well-formed s3:// URI in a bucket the tenant owns or was granted (read-write for writing) is refused."""
    parsed = parse_s3_uri(uri)
    if parsed is None:
        return False
    right = rights.right(parsed[0])
    return right is not None and right.allows(mode)


@dataclass(frozen=True)
class S3Location:
    """A place in S3 a workset touches: the spec field naming it, the URI, and whether it is read or written."""

    field: str
    uri: str
    mode: Mode


# Fields whose text is about the workset, not a place it touches (a label may well quote a URI).
_NOT_LOCATIONS = frozenset({"name", "tenant", "labels", "notifications"})
_WRITTEN = frozenset({"export_uri"})
_EMBEDDED_URI = re.compile(r"s3://[^\s'\"`,;()<>]+", re.IGNORECASE)


def spec_locations(spec: WorksetSpec | Mapping[str, Any]) -> list[S3Location]:
    """Every S3 URI a workset touches, wherever the spec names it: inputs (FASTQs, extra FASTQs, alignments),
    manifest columns (concordance and truth data, references), URIs inside Daylily's run arguments, the
    export_uri (written), and the Daylily folder it records (daylily.s3_bucket + s3_prefix, written).

    Works on the stored spec as a plain mapping too (the scheduler's check does not depend on the spec still
    parsing), and finds URIs wherever they are, so a field added later is covered without a change here."""
    data: Mapping[str, Any] = (
        spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, WorksetSpec) else spec
    )
    found: list[S3Location] = []

    def walk(value: object, path: str, top: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not path and key in _NOT_LOCATIONS:
                    continue
                walk(item, f"{path}.{key}" if path else str(key), top or str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", top)
        elif isinstance(value, str):
            mode: Mode = "write" if top in _WRITTEN else "read"
            for match in _EMBEDDED_URI.finditer(value):
                found.append(S3Location(path, "s3://" + match.group(0)[len("s3://") :], mode))

    walk(data, "", "")
    daylily = data.get("daylily")
    if isinstance(daylily, Mapping) and isinstance(daylily.get("s3_bucket"), str) and daylily["s3_bucket"]:
        prefix = str(daylily.get("s3_prefix") or "").lstrip("/")
        found.append(
            S3Location("daylily.s3_bucket", f"s3://{daylily['s3_bucket'].strip()}/{prefix}", "write")
        )
    return found


def _how_to_get(rights: TenantBuckets, bucket: str, mode: Mode) -> str:
    tenant = rights.tenant_id
    own = ", ".join(f"s3://{b}/" for b in rights.own)
    use_own = f"use the tenant's own bucket ({own})" if own else "use a bucket granted to the tenant"
    access = "--read-write" if mode == "write" else "--read-only"
    return f"{use_own[0].upper()}{use_own[1:]}, or have an operator grant it: `stamen bucket grant {tenant} {bucket} {access}`."


def refusal(rights: TenantBuckets, location: S3Location, *, code: str | None = None) -> Finding | None:
    """The finding for one location the tenant may not use, or None when it may. A malformed URI is refused
    too (the workset rules say what is wrong with it, VAL-URI-*): nothing unchecked is ever fetched."""
    if may_access(rights, location.uri, location.mode):
        return None
    bucket, tenant = location.uri[len("s3://") :].partition("/")[0], rights.tenant_id
    verb = "write to" if location.mode == "write" else "read from"
    if rights.right(bucket) is None:
        why = f"it is not tenant {tenant}'s own bucket and was not granted to it"
    else:
        why = f"it is granted to tenant {tenant} read-only"
    return finding(
        code or ("S3-ACCESS-002" if location.mode == "write" else "S3-ACCESS-001"),
        location.field,
        f"{location.field or location.uri}: tenant {tenant} may not {verb} bucket {bucket}: {why}",
        fix=_how_to_get(rights, bucket, location.mode),
    )


def access_findings(spec: WorksetSpec | Mapping[str, Any], rights: TenantBuckets) -> list[Finding]:
    """One finding per S3 location of the workset its tenant may not use. Nothing is asked about the objects
    themselves, so the answer is the same whether they exist or not."""
    return location_findings(spec_locations(spec), rights)


def location_findings(locations: Sequence[S3Location], rights: TenantBuckets) -> list[Finding]:
    """`access_findings` for a spec's locations found earlier (`spec_locations`): the rule asked of each, with
    these rights. For a caller that checks one spec many times against rights that may change (the scheduler
    before every step): the spec is walked once, the rights are asked every time."""
    return [f for loc in locations if (f := refusal(rights, loc)) is not None]
