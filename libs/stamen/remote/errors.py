"""The one error the remote CLI raises: the API's own {code, message, details} when the server refused,
or a local code (CONNECTION_FAILED, PATH_PARAMETER_MISSING, ...) when the request never got that far."""

from __future__ import annotations

from typing import Any


class RemoteError(Exception):
    def __init__(
        self, code: str, message: str, details: dict[str, Any] | None = None, *, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}
        self.status = status  # the HTTP status when a server answered; None for local errors

    def document(self) -> dict[str, Any]:
        """What `--json` prints: the API's error document, plus the HTTP status when there was one."""
        doc: dict[str, Any] = {"code": self.code, "message": str(self), "details": self.details}
        if self.status is not None:
            doc["status"] = self.status
        return doc
