"""Reading what an API request carries: its body (bounded), media type, tenant and flags."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from services.portal.api.errors import ApiError
from stamen.inputs.contexts import INTAKE_SETTINGS
from stamen.inputs.submission import Media, media_of

log = structlog.get_logger(__name__)

TENANT_HEADER = "X-Stamen-Tenant"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# What is read and thrown away after an oversized body, so the client can read the 413 before the
# connection closes; beyond this the connection is simply closed.
_DRAIN_LIMIT = 64 * 1024 * 1024
_BODY = web.RequestKey("stamen_body", bytes)


async def read_body(request: web.Request) -> bytes:
    """The whole body, read once per request: at most STAMEN_API_MAX_BODY_BYTES (413), within
    STAMEN_API_BODY_TIMEOUT_SECONDS (408: a Content-Length longer than what is sent, a chunked body that
    stops or breaks mid-way, a client sending a byte a minute), never echoed back."""
    if _BODY in request:
        return request[_BODY]
    settings = request.app[INTAKE_SETTINGS]
    limit, seconds = settings.api_max_body_bytes, settings.api_body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            body = await _read_bounded(request, limit)
    except TimeoutError:
        log.info("api.body_timeout", path=request.path, seconds=seconds, remote=request.remote)
        raise ApiError(
            408,
            "REQUEST_TIMEOUT",
            f"the request body did not arrive in full within {seconds:g} s; "
            "send it again (and check its Content-Length)",
            {"timeout_seconds": seconds},
            close_connection=True,
        ) from None
    except (RequestPayloadError, HttpProcessingError):
        raise ApiError(
            400,
            "BAD_REQUEST",
            "the request body is malformed (its chunked transfer encoding or length does not parse)",
            close_connection=True,
        ) from None
    except ConnectionError:
        # The client went away mid-body: nobody will read an answer, and it is not a server fault.
        log.info("api.client_gone", path=request.path, remote=request.remote)
        raise ApiError(
            400, "BAD_REQUEST", "the connection closed before the body ended", close_connection=True
        ) from None
    request[_BODY] = body
    return body


async def _read_bounded(request: web.Request, limit: int) -> bytes:
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
