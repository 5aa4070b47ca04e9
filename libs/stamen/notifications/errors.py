"""Errors of notification management, each with one stable code (the API's `code`, the CLI's
`error [CODE]`) and the HTTP status the API answers with. Documented in docs/api.md."""

from __future__ import annotations

from stamen.errors import CodedError


class NotificationError(CodedError):
    code = "NOTIFY_ERROR"
    http_status = 400


class PreferencesInvalid(NotificationError):
    """`details.errors`: [{"field": "webhook.url", "message": ...}, ...]."""

    code = "NOTIFY_PREFERENCES_INVALID"
    http_status = 400


class OwnerNotFound(NotificationError):
    code = "CUSTOMER_NOT_FOUND"
    http_status = 404


class SecretStoreReadOnly(NotificationError):
    code = "NOTIFY_SECRET_STORE_READ_ONLY"
    http_status = 409


class SecretStoreUnavailable(NotificationError):
    code = "NOTIFY_SECRET_STORE_UNAVAILABLE"
    http_status = 503


class ChannelUnavailable(NotificationError):
    """SNS did not answer while subscriptions were being made (the preferences were saved; send them again)."""

    code = "NOTIFY_CHANNEL_UNAVAILABLE"
    http_status = 502


class DeliveryNotFound(NotificationError):
    code = "NOTIFICATION_NOT_FOUND"
    http_status = 404


class DeliveryNotResendable(NotificationError):
    code = "NOTIFICATION_NOT_RESENDABLE"
    http_status = 409


ERRORS: tuple[type[NotificationError], ...] = (
    PreferencesInvalid,
    OwnerNotFound,
    SecretStoreReadOnly,
    SecretStoreUnavailable,
    ChannelUnavailable,
    DeliveryNotFound,
    DeliveryNotResendable,
)
