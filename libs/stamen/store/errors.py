"""Errors the store raises; each has a stable code the API maps to a response."""

from __future__ import annotations

from stamen.errors import CodedError


class StoreError(CodedError):
    code = "STORE_ERROR"


class WorksetNotFound(StoreError):
    code = "WORKSET_NOT_FOUND"
    http_status = 404


class ConcurrencyConflict(StoreError):
    """Another writer changed the row since it was read; reload and decide again."""

    code = "WORKSET_CONCURRENT_UPDATE"
    http_status = 409
