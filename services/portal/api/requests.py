"""Reading what an API request carries: its body (bounded), media type, tenant and flags."""

from __future__ import annotations

from aiohttp import web

from services.portal.api.errors import ApiError
from stamen.inputs.contexts import INTAKE_SETTINGS
from stamen.inputs.submission import Media, media_of

TENANT_HEADER = "X-Stamen-Tenant"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# What is read and thrown away after an oversized body, so the client can read the 413 before the
# connection closes; beyond this the connection is simply closed.
_DRAIN_LIMIT = 64 * 1024 * 1024


async def read_body(request: web.Request) -> bytes:
    limit = request.app[INTAKE_SETTINGS].api_max_body_bytes
    too_large = ApiError(
        413, "REQUEST_TOO_LARGE", f"the body is larger than {limit} bytes", {"limit_bytes": limit}
    )
    if request.content_length is not None and request.content_length > limit:
        await _drain(request)
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            await _drain(request)
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: web.Request) -> None:
    drained = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        drained += len(chunk)
        if drained > _DRAIN_LIMIT:
            return


def body_media(request: web.Request) -> Media:
    media = media_of(request.headers.get("Content-Type"))
    if media is None:
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the workset as application/json or application/yaml",
            {"content_type": request.headers.get("Content-Type")},
        )
    return media


def tenant_header(request: web.Request) -> str | None:
    value = request.headers.get(TENANT_HEADER)
    return value.strip() if value is not None and value.strip() else None


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ApiError(
        400, "INVALID_PARAMETER", f"{name} must be true or false, not {value!r}", {"parameter": name}
    )
