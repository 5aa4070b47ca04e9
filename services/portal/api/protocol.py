"""Requests aiohttp refuses before any handler runs (not HTTP/1.x, a chunked body that does not parse, a
header line over 8 KiB) answered in the API's JSON error format: a stable code, a message that echoes
nothing of the request, and an info log line instead of an error with a traceback (the client's mistake,
not a server fault).

aiohttp writes these answers in `RequestHandler.handle_error` (plain text, quoting up to 128 KiB of the
offending bytes) and offers no hook, so the portal installs a subclass as the request handler its servers
create (`install`); tests/api/test_http_hardening.py would catch an aiohttp release that changes this.
"""

from __future__ import annotations

import structlog
from aiohttp import http_exceptions, web, web_protocol, web_request, web_server

log = structlog.get_logger(__name__)


def describe(exc: BaseException | None) -> tuple[int, str, str]:
    """(HTTP status, code, message) for what the HTTP parser refused; the message names the kind of
    problem only."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return 431, "REQUEST_HEADER_TOO_LARGE", "a header (or the request line) is longer than 8190 bytes"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return 400, "BAD_REQUEST", "the request line is not HTTP/1.x"
    text = str(getattr(exc, "message", "") or exc or "").lower()
    if isinstance(exc, http_exceptions.TransferEncodingError) or "chunk" in text:
        return 400, "BAD_REQUEST", "the body's chunked transfer encoding is malformed"
    if isinstance(exc, http_exceptions.ContentLengthError) or "content-length" in text:
        return 400, "BAD_REQUEST", "the body does not match its Content-Length"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, "BAD_REQUEST", "a header is malformed"
    return 400, "BAD_REQUEST", "the request is not valid HTTP/1.1"


class JsonErrorRequestHandler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        status, code, text = describe(exc)
        log.info("http.request_refused", status=status, code=code, reason=text, remote=request.remote)
        response = web.json_response({"code": code, "message": text, "details": {}}, status=status)
        response.force_close()
        return response


def install() -> None:
    """Every aiohttp server this process starts from now on answers protocol errors as JSON."""
    # aiohttp does not re-export RequestHandler from web_server, where Server builds it; we replace that name.
    web_server.RequestHandler = JsonErrorRequestHandler  # type: ignore[attr-defined]
