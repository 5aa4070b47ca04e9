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
