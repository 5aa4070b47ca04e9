"""Settings of the portal service itself (STAMEN_ prefix). Authentication settings are `AuthSettings`."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore")

    s3_events_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret a caller of POST /api/v1/s3-events presents in X-Stamen-Events-Secret "
        "(e.g. an EventBridge API destination). Unset: only an authenticated operator may call it "
        "(or anyone in local-demo mode).",
    )
    api_page_limit_max: int = Field(default=500, ge=1)
    # --- the web pages (services/portal/web; docs/portal.md)
    portal_secret: SecretStr | None = Field(
        default=None,
        description="Key of the portal's CSRF tokens (HMAC-SHA256). Give every replica the same one; unset, "
        "each process makes its own at start, so forms open across a restart must be reloaded.",
    )
    portal_session_hours: float = Field(default=12.0, gt=0, description="A sign-in lasts at most this long.")
    portal_session_idle_minutes: float = Field(
        default=120.0, gt=0, description="A session unused for this long is signed out."
    )
    portal_invitation_days: int = Field(
        default=7, ge=1, le=90, description="How long a sign-up invitation is valid."
    )
    portal_chart_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long the dashboard's charts and month totals (sums over a tenant's month of step runs "
        "and 30 days of actuals) are reused while no workset was created or finished; counts, running, queue "
        "and retries are always read fresh. 0: never reused.",
    )
    portal_trust_forwarded_proto: bool = Field(
        default=False,
        description="Behind a TLS-terminating proxy: take X-Forwarded-Proto=https as https (Secure cookies).",
    )
