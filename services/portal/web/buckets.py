"""Which S3 buckets a page may show or write for its caller, and presigned links into them.

One question, asked by the Files page and by the outputs of a workset: may this caller read (or write)
`s3://bucket/...`? A customer may use its own bucket (customers.s3_bucket, from onboarding) and the buckets
an operator granted it (stamen.tenancy.may_access, the rule the intake paths and the scheduler ask too); an
operator any bucket. Nothing here asks S3 whether an object exists before that answer is yes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from services.portal.api.access import principal_of
from services.portal.api.context import SECURITY
from stamen.service.keys import POOL
from stamen.tenancy import GrantAccess, may_access, tenant_buckets

Mode = Literal["read", "write"]
LINK_SECONDS = 900  # presigned links live 15 minutes


@dataclass(frozen=True)
class BucketChoice:
    bucket: str
    access: GrantAccess
    source: str  # "own" or who granted it


async def buckets_for(request: web.Request, tenant: str | None) -> list[BucketChoice]:
    """The buckets `tenant` may use: its own and those granted to it (stamen.tenancy). An operator browsing
    no tenant gets none listed."""
    if tenant is None:
        return []
    rights = await tenant_buckets(request.app[POOL], tenant)
    return [
        BucketChoice(r.bucket, r.access, "own" if r.source == "own" else r.granted_by or "an operator")
        for r in rights.rights
    ]


async def may_use(request: web.Request, tenant: str | None, bucket: str, mode: Mode) -> bool:
    """stamen.tenancy.may_access, the rule every intake path and the scheduler ask; operators may use any."""
    if principal_of(request).is_operator:
        return True
    if tenant is None:
        return False
    return may_access(await tenant_buckets(request.app[POOL], tenant), f"s3://{bucket}/", mode)


def split_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[5:].partition("/")
    return (bucket, key) if bucket else None


async def download_link(request: web.Request, bucket: str, key: str) -> str:
    s3: Any = request.app[SECURITY].s3
    name = key.rsplit("/", 1)[-1] or "download"
    url: str = await s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": key, "ResponseContentDisposition": f'attachment; filename="{name}"'},
        ExpiresIn=LINK_SECONDS,
    )
    return url


async def list_objects(
    request: web.Request, bucket: str, prefix: str, *, delimiter: str = "/", limit: int = 500
) -> tuple[list[str], list[dict[str, Any]], bool]:
    """(sub-prefixes, objects, truncated) under `prefix`; the caller has checked `may_use` first."""
    s3: Any = request.app[SECURITY].s3
    answer = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter=delimiter, MaxKeys=limit)
    prefixes = [p["Prefix"] for p in answer.get("CommonPrefixes", [])]
    objects = [
        {"key": o["Key"], "size": o["Size"], "modified": o["LastModified"]}
        for o in answer.get("Contents", [])
        if o["Key"] != prefix
    ]
    return prefixes, objects, bool(answer.get("IsTruncated"))
