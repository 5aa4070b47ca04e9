"""API errors: every failure under /api/ is JSON {"code", "message", "details"} with a stable code.

User input never produces a 500 or a traceback: handlers raise `ApiError`; anything else is a bug,
logged with its traceback and answered with INTERNAL_ERROR and no detail.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

log = structlog.get_logger(__name__)

API_PREFIX = "/api/"
# aiohttp's own refusals (unknown route, wrong method, ...) mapped to stable codes.
_HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE",
               415: "UNSUPPORTED_MEDIA_TYPE"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message, "details": details or {}}, status=status)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, str(exc), exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("api.internal_error", path=request.path, method=request.method)
        return error_response(500, "INTERNAL_ERROR", "the request could not be handled; it was logged")
