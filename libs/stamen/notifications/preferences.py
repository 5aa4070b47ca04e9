"""Per-owner notification preferences (a tenant's, or the operators'): channels, which kinds each
channel gets, "only final failures", a digest of low-severity kinds, quiet hours.

Two shapes: `NotificationPreferences` is what is stored and shown (no secrets, ever);
`PreferencesInput` is what a caller sends, which may carry the two write-only secrets (the Linear API
key, the webhook signing secret). Those go to the secret store and never into these models' output.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from stamen.diagnostics.codes import Severity
from stamen.notifications.kinds import OPERATORS, Kind, kinds_for

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
E164 = r"^\+[1-9][0-9]{6,14}$"
Email = Annotated[str, Field(pattern=EMAIL, max_length=254)]
Phone = Annotated[str, Field(pattern=E164, description="E.164, e.g. +14155550100")]
Label = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f]+$")]
LocalTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM, local time")]
MIN_SECRET_LENGTH = 16


class Channel(StrEnum):
    SNS = "sns"
    LINEAR = "linear"
    WEBHOOK = "webhook"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SnsPreferences(_Model):
    """The owner's SNS topic (a tenant's from onboarding; the operators' from settings). E-mail and SMS
    addresses are subscribed to it with a filter policy on the `severity` message attribute."""

    enabled: bool = True
    events: list[Kind] | None = Field(default=None, description="Kinds published; null = every kind.")
    emails: list[Email] = Field(default_factory=list, max_length=20)
    sms: list[Phone] = Field(default_factory=list, max_length=10)
    email_min_severity: Severity = Severity.INFO
    sms_min_severity: Severity = Severity.ERROR


class LinearPreferences(_Model):
    enabled: bool = False
    team_id: str | None = Field(default=None, description="The Linear team's id (a UUID).")
    labels: list[Label] = Field(default_factory=lambda: ["stamen"], max_length=10)
    events: list[Kind] | None = Field(
        default=None, description="null = failures and what follows them (see docs/notifications.md)."
    )

    @field_validator("team_id")
    @classmethod
    def _team_is_uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                "must be the team's id, a UUID (Linear: Settings > Teams > the team > copy ID)"
            ) from None


class WebhookPreferences(_Model):
    enabled: bool = False
    url: str | None = Field(default=None, max_length=2048)
    format: Literal["json", "slack"] = "json"
    events: list[Kind] | None = Field(default=None, description="Kinds posted; null = every kind.")

    @field_validator("url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; the signature authenticates stamen")
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            raise ValueError("must not contain spaces or control characters")
        return value


class DigestPreferences(_Model):
    """Kinds at or below `max_severity` are collected and sent as one message per interval."""

    enabled: bool = False
    max_severity: Severity = Severity.INFO
    interval_minutes: int = Field(default=60, ge=5, le=1440)


class QuietHours(_Model):
    """Between `start` and `end` (local time in `timezone`), kinds below `min_severity` wait until the end."""

    enabled: bool = False
    start: LocalTime = "22:00"
    end: LocalTime = "07:00"
    timezone: str = Field(default="UTC", max_length=64)
    min_severity: Severity = Field(
        default=Severity.ERROR, description="This serious or more still goes out during quiet hours."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet hours start and end must differ")
        return self

    def until(self, at: datetime) -> datetime | None:
        """When the quiet period `at` falls in ends (UTC), or None when `at` is not quiet."""
        if not self.enabled:
            return None
        zone = ZoneInfo(self.timezone)
        local = at.astimezone(zone)
        now, start, end = local.time(), time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start < end:
            inside, end_day = start <= now < end, local.date()
        else:  # wraps midnight, e.g. 22:00-07:00
            inside = now >= start or now < end
            end_day = local.date() if now < end else local.date() + timedelta(days=1)
        if not inside:
            return None
        return datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


class NotificationPreferences(_Model):
    only_final_failures: bool = Field(
        default=False, description="No message for a failure that will be retried (kind `retrying`)."
    )
    sns: SnsPreferences = Field(default_factory=SnsPreferences)
    linear: LinearPreferences = Field(default_factory=LinearPreferences)
    webhook: WebhookPreferences = Field(default_factory=WebhookPreferences)
    digest: DigestPreferences = Field(default_factory=DigestPreferences)
    quiet_hours: QuietHours = Field(default_factory=QuietHours)

    def problems(self, owner: str) -> list[tuple[str, str]]:
        """(field, why) for what the models alone cannot check: kinds of the owner, complete channels."""
        allowed = set(kinds_for(owner))
        found: list[tuple[str, str]] = []
        for channel in Channel:
            events = getattr(self, channel.value).events or []
            for i, kind in enumerate(events):
                if kind not in allowed:
                    whose = "operators" if owner == OPERATORS else "a tenant"
                    found.append(
                        (f"{channel.value}.events[{i}]", f"{kind} is not a kind for {whose}; use one of "
                         + ", ".join(k.value for k in kinds_for(owner)))
                    )  # fmt: skip
        if self.linear.enabled and self.linear.team_id is None:
            found.append(("linear.team_id", "Linear is enabled: say which team gets the issues"))
        if self.webhook.enabled and self.webhook.url is None:
            found.append(("webhook.url", "the webhook is enabled: give its https:// URL"))
        return found

    def events_for(self, channel: Channel, owner: str) -> tuple[Kind, ...]:
        chosen = getattr(self, channel.value).events
        if chosen is not None:
            return tuple(chosen)
        if channel is Channel.LINEAR and owner != OPERATORS:
            return LINEAR_TENANT_DEFAULT
        return kinds_for(owner)


# Linear is an issue tracker: by default it hears about failures and what happens to them after.
LINEAR_TENANT_DEFAULT: tuple[Kind, ...] = (
    Kind.RETRYING,
    Kind.FAILED,
    Kind.COMPLETED,
    Kind.CANCELLED,
    Kind.REQUEUED,
)


# --- what a caller sends: the same, plus write-only secrets ---------------------------------------
class LinearInput(LinearPreferences):
    api_key: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Write-only: a Linear personal API key. Stored in the secret store.",
    )


class WebhookInput(WebhookPreferences):
    secret: SecretStr | None = Field(
        default=None,
        min_length=MIN_SECRET_LENGTH,
        max_length=512,
        description="Write-only: the HMAC-SHA256 signing secret (at least 16 characters).",
    )


class PreferencesInput(NotificationPreferences):
    linear: LinearInput = Field(default_factory=LinearInput)
    webhook: WebhookInput = Field(default_factory=WebhookInput)

    def stored(self) -> NotificationPreferences:
        """The preferences without the secrets."""
        doc = self.model_dump(mode="json", exclude={"linear": {"api_key"}, "webhook": {"secret"}})
        return NotificationPreferences.model_validate(doc)
