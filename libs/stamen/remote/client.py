"""A client of one running portal: its operations (from GET /api/v1/openapi.json) and calls by operationId.

Every CLI command that talks to a server goes through `RemoteClient.call`, the shortcuts included."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stamen.remote.errors import RemoteError
from stamen.remote.operations import Body, Operation, fill_path, find, parse_operations, query_string
from stamen.remote.session import Connection
from stamen.remote.transport import Answer, send

OPENAPI_PATH = "/api/v1/openapi.json"
Transport = Callable[..., Answer]


def error_of(answer: Answer) -> RemoteError:
    """The API's {code, message, details}; anything else (a proxy's HTML page, ...) as HTTP_<status>."""
    doc: Any = None
    if answer.is_json:
        try:
            doc = answer.json()
        except ValueError:
            doc = None
    if isinstance(doc, dict) and isinstance(doc.get("code"), str):
        raw = doc.get("details")
        details: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if "Retry-After" in answer.headers:
            details = {**details, "retry_after_seconds": answer.headers["Retry-After"]}
        return RemoteError(doc["code"], str(doc.get("message", "")), details, status=answer.status)
    excerpt = " ".join(answer.text().split())[:200]
    return RemoteError(
        f"HTTP_{answer.status}",
        f"the server answered {answer.status} ({answer.content_type or 'no content type'}): {excerpt}",
        status=answer.status,
    )


class RemoteClient:
    def __init__(self, connection: Connection, *, transport: Transport = send) -> None:
        self.connection = connection
        self._send = transport
        self._operations: list[Operation] | None = None

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json, text/csv;q=0.9, */*;q=0.1"}
        if self.connection.credential:
            # API keys and Cognito tokens both travel as a bearer credential (docs/api.md).
            headers["Authorization"] = f"Bearer {self.connection.credential}"
        return {**headers, **(extra or {})}

    def operations(self) -> list[Operation]:
        if self._operations is None:
            url = self.connection.url + OPENAPI_PATH
            answer = self._send("GET", url, headers=self._headers())
            document: Any = None
            if answer.ok and answer.is_json:
                try:
                    document = answer.json()
                except ValueError:
                    document = None
            if not isinstance(document, dict) or "paths" not in document:
                raise RemoteError(
                    "OPENAPI_UNAVAILABLE",
                    f"no OpenAPI document at {url} (HTTP {answer.status}); the URL must be the portal's base "
                    "URL, e.g. http://127.0.0.1:8080 without /api/v1",
                    {"url": url, "status": answer.status},
                )
            self._operations = parse_operations(document)
        return self._operations

    def operation(self, operation_id: str) -> Operation:
        return find(self.operations(), operation_id)

    def call(
        self,
        operation_id: str,
        *,
        path: Sequence[tuple[str, str]] = (),
        query: Sequence[tuple[str, str]] = (),
        body: Body | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one operation; a non-2xx answer raises its RemoteError."""
        op = self.operation(operation_id)
        url = self.connection.url + fill_path(op, path)
        qs = query_string(op, query)
        if qs:
            url += "?" + qs
        if body is None and op.body_required:
            raise RemoteError(
                "BODY_REQUIRED",
                f"{op.operation_id} ({op.method} {op.path}) needs a request body ({', '.join(op.body_media)}): "
                "add --body JSON or --body @file.json|@file.yaml",
                {"operation_id": op.operation_id},
            )
        extra = dict(headers or {})
        if body is not None:
            extra["Content-Type"] = body.media
        answer = self._send(op.method, url, headers=self._headers(extra), body=body.data if body else None)
        if not answer.ok:
            error = error_of(answer)
            # A public operation's 401 (a wrong password at login) is not about the credential sent.
            raise error if op.public else self._explained(error)
        return answer

    def _explained(self, error: RemoteError) -> RemoteError:
        """A refused credential says where it came from (never the credential itself)."""
        if error.status != 401:
            return error
        if self.connection.credential is None:
            hint = "no credentials were sent: pass --token, set STAMEN_TOKEN or STAMEN_API_KEY, or run `stamen login`"
            if self.connection.source != "none":
                hint += f"; {self.connection.source.removeprefix('none (').removesuffix(')')}"
        else:
            hint = f"the credential came from {self.connection.source}"
            if self.connection.source.startswith("the session file"):
                hint += "; run `stamen login` again"
        return RemoteError(error.code, f"{error} ({hint})", error.details, status=error.status)
