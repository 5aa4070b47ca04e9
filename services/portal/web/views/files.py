"""Files: browse the tenant's bucket by prefix (sizes, dates), download through presigned links, upload
straight to S3 with a presigned POST (the portal never proxies the bytes), delete after a confirmation.

Every bucket goes through `buckets.may_use` before S3 is asked anything, and keys are checked here: no
empty, absolute, `..` or control-character paths, so a link cannot reach another tenant's data."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from services.portal.api.access import principal_of, tenant_for
from services.portal.api.context import SECURITY
from services.portal.api.errors import ApiError
from services.portal.web.buckets import LINK_SECONDS, buckets_for, download_link, list_objects, may_use
from services.portal.web.render import render, see_other
from stamen.customers import StorageNotMeasured, check_customer_storage
from stamen.customers.model import CustomerNotFound
from stamen.service.keys import POOL

MAX_UPLOAD_BYTES = 5 * 1024**3  # S3's limit for one POST upload
MAX_KEY_BYTES = 1024


def _bad(parameter: str, why: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER", f"{parameter}: {why}", {"parameter": parameter})


def check_key(key: str, parameter: str = "key", *, prefix: bool = False) -> str:
    """A key (or a folder prefix) the portal will touch: relative, no `..` segment, no control characters."""
    if not key and prefix:
        return ""
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise _bad(parameter, f"give a path of 1 to {MAX_KEY_BYTES} bytes")
    if key.startswith("/") or "//" in key or any(part in (".", "..") for part in key.split("/")):
        raise _bad(parameter, "use a plain path like reads/run1/S1_R1.fastq.gz (no leading /, no . or ..)")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise _bad(parameter, "control characters are not allowed in paths")
    if prefix and not key.endswith("/"):
        key += "/"
    return key


async def _scope(request: web.Request, bucket: str | None) -> tuple[str | None, str | None, list[Any]]:
    """(tenant, bucket, choices): the bucket asked for if the caller may read it, else the tenant's first."""
    principal = principal_of(request)
    asked = request.query.get("tenant") or None
    tenant = tenant_for(request, asked) if principal.is_operator and asked else principal.customer_id
    choices = await buckets_for(request, tenant)
    if bucket is None:
        return tenant, choices[0].bucket if choices else None, choices
    if not await may_use(request, tenant, bucket, "read"):
        raise ApiError(404, "BUCKET_NOT_FOUND", f"no bucket {bucket!r} among your buckets")
    return tenant, bucket, choices


async def browse(request: web.Request) -> web.Response:
    tenant, bucket, choices = await _scope(request, request.query.get("bucket") or None)
    prefix = check_key(request.query.get("prefix", ""), "prefix", prefix=True)
    listing: dict[str, Any] = {"folders": [], "files": [], "truncated": False, "error": None}
    if bucket:
        try:
            folders, objects, truncated = await list_objects(request, bucket, prefix)
            listing = {"folders": folders, "files": objects, "truncated": truncated, "error": None}
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
            listing["error"] = (
                "This bucket does not exist yet."
                if code == "NoSuchBucket"
                else ("The bucket could not be listed right now; try again shortly.")
            )
    crumbs = []
    parts = [p for p in prefix.split("/") if p]
    for i, part in enumerate(parts):
        crumbs.append((part, "/".join(parts[: i + 1]) + "/"))
    # A read-only grant (e.g. a shared reference bucket) is browsed without the upload and delete controls.
    writable = bool(bucket) and await may_use(request, tenant, str(bucket), "write")
    granted = next((c for c in choices if c.bucket == bucket and c.source != "own"), None)
    context = {
        "tenant": tenant,
        "bucket": bucket,
        "choices": choices,
        "prefix": prefix,
        "crumbs": crumbs,
        **listing,
        "link_minutes": LINK_SECONDS // 60,
        "writable": writable,
        "granted": granted,
    }
    return await render(request, "files/browse.html", context)


async def download(request: web.Request) -> web.Response:
    """A fresh presigned link for one object the caller may read (links on the page never go stale)."""
    bucket = request.query.get("bucket", "")
    key = check_key(request.query.get("key", ""))
    await _scope(request, bucket)  # BUCKET_NOT_FOUND unless the caller may read it
    raise web.HTTPFound(await download_link(request, bucket, key))


async def presign(request: web.Request) -> web.Response:
    """A presigned POST for one upload into a bucket the caller may write (JSON in, JSON out)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad("body", "send JSON: {bucket, key, size}") from None
    if not isinstance(body, dict):
        raise _bad("body", "send a JSON object: {bucket, key, size}")
    principal = principal_of(request)
    requested_tenant = body.get("tenant") if principal.is_operator else None
    tenant = tenant_for(request, str(requested_tenant)) if requested_tenant else principal.customer_id
    key = check_key(str(body.get("key", "")))
    size = body.get("size")
    if not isinstance(size, int) or not 0 <= size <= MAX_UPLOAD_BYTES:
        raise _bad("size", f"the file's size in bytes, at most {MAX_UPLOAD_BYTES}")
    choices = await buckets_for(request, tenant)
    bucket = str(body.get("bucket") or (choices[0].bucket if choices else ""))
    if not bucket or not await may_use(request, tenant, bucket, "write"):
        raise ApiError(404, "BUCKET_NOT_FOUND", f"no bucket {bucket!r} you may upload to")
    if tenant:
        security = request.app[SECURITY]
        try:
            await check_customer_storage(
                request.app[POOL], security.s3, tenant, incoming_bytes=size, cache=security.bucket_usage
            )
        except (CustomerNotFound, StorageNotMeasured):
            pass  # not a customer (operators' local demo), or unmeasured: the validator checks again later
    s3: Any = request.app[SECURITY].s3
    post = await s3.generate_presigned_post(
        Bucket=bucket, Key=key, Conditions=[["content-length-range", 0, max(size, 1)]], ExpiresIn=LINK_SECONDS
    )
    return web.json_response({"url": post["url"], "fields": post["fields"], "uri": f"s3://{bucket}/{key}"})


async def delete(request: web.Request) -> web.Response:
    """First POST: a confirmation page. The confirmed POST deletes the object."""
    form = await request.post()
    bucket = str(form.get("bucket", ""))
    key = check_key(str(form.get("key", "")))
    tenant, _, _ = await _scope(request, bucket)
    if not await may_use(request, tenant, bucket, "write"):
        raise ApiError(403, "BUCKET_READ_ONLY", f"s3://{bucket} is read-only for you")
    parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    if form.get("confirm") != "yes":
        return await render(
            request, "files/confirm_delete.html", {"bucket": bucket, "key": key, "parent": parent}
        )
    s3: Any = request.app[SECURITY].s3
    await s3.delete_object(Bucket=bucket, Key=key)
    see_other("/files", bucket=bucket, prefix=parent, notice="file-deleted")
