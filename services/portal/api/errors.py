"""API errors: every failure under /api/ is JSON {"code", "message", "details"} with a stable code.

User input never produces a 500 or a traceback: handlers raise `ApiError`; anything else is a bug,
logged with its traceback and answered with INTERNAL_ERROR and no detail. That includes a UnicodeEncodeError
or a PostgreSQL character error: text the database cannot store is refused where it enters (text.py), so
one of those here means the server made such text itself.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from stamen.auth.errors import RateLimited
from stamen.errors import CodedError
from stamen.service.keys import POSTGRES

log = structlog.get_logger(__name__)

API_PREFIX = "/api/"
# aiohttp's own refusals (unknown route, wrong method, ...) mapped to stable codes.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}
        # A body left half-read (timed out, malformed) leaves the connection unusable for another request.
        self.close_connection = close_connection


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "details": details or {}}, status=status, headers=headers
    )


def coded_error_response(exc: CodedError) -> web.Response:
    """A library error (stamen.errors.CodedError) as its own code and status; 401s say how to
    authenticate, 429s when to come back."""
    headers: dict[str, str] = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="stamen"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return error_response(exc.http_status, exc.code, str(exc), _jsonable(exc.details), headers)


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list | dict) or v is None else str(v)
        for k, v in details.items()
    }


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, str(exc), exc.details)
        if exc.close_connection:
            response.force_close()
        return response
    except CodedError as exc:
        return coded_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
        return error_response(exc.status, code, exc.reason)
    except Exception as exc:
        postgres = request.app.get(POSTGRES)
        if postgres is not None and not await postgres.check():  # an outage, not a bug: asked of PostgreSQL
            log.warning("api.database_unavailable", path=request.path, method=request.method, error=str(exc))
            response = error_response(503, "DATABASE_UNAVAILABLE", "the database cannot be reached right now; "
                                      "try again (a submission with the same Idempotency-Key is made once)")  # fmt: skip
            response.headers["Retry-After"] = "2"
            return response
        log.exception("api.internal_error", path=request.path, method=request.method)
        return error_response(500, "INTERNAL_ERROR", "the request could not be handled; it was logged")
