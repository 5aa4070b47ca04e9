"""Errors of NATS credential management, each with one stable code (the API's error `code`)."""

from __future__ import annotations

from stamen.auth.errors import AuthError


class NatsCredentialNotFound(AuthError):
    """Unknown id, or another tenant's credential (the same answer, so existence does not leak)."""

    code = "NATS_CREDENTIAL_NOT_FOUND"
    http_status = 404


class NatsCredentialRequestInvalid(AuthError):
    code = "NATS_CREDENTIAL_REQUEST_INVALID"
    http_status = 400
