"""The one base of stamen's coded errors: a stable machine-readable `code` (the API's and the CLI's
`code`, documented in docs/api.md), the HTTP status an API answers it with, and `details` (JSON-able
facts: which field, which id). Each family (auth, customers, notifications, store) subclasses it, and
the API's and the pages' error handling map any of them the same way."""

from __future__ import annotations

from typing import Any, ClassVar


class CodedError(Exception):
    code: ClassVar[str] = "STAMEN_ERROR"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details
