"""Settings of authentication (STAMEN_ prefix; documented in docs/customers-and-auth.md)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore", populate_by_name=True)

    auth_enabled: bool = Field(
        default=True,
        description="Off only for a local demo: every request is then an operator and the portal shows a banner.",
    )
    region: str = "us-west-2"
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "STAMEN_AWS_ENDPOINT_URL")
    )

    # Cognito user pool (same variables as CustomerSettings).
    cognito_region: str | None = Field(default=None, description="Defaults to `region`.")
    cognito_user_pool_id: str | None = None
    cognito_user_pool_name: str = "stamen"
    cognito_create_pool: bool = False
    cognito_app_client_ids: str = Field(
        default="", description="Comma-separated app client ids tokens may be for."
    )
    cognito_operator_group: str = "operators"
    cognito_jwks_url: str | None = Field(
        default=None,
        description="Override of the JWKS URL; default https://cognito-idp.<region>.amazonaws.com/<pool>/"
        ".well-known/jwks.json, or <AWS_ENDPOINT_URL>/<pool>/.well-known/jwks.json with moto.",
    )
    cognito_issuer: str | None = Field(
        default=None,
        description="Override of the expected `iss`; default https://cognito-idp.<region>.amazonaws.com/<pool>.",
    )
    token_uses: str = Field(default="id,access", description="Token kinds accepted: id, access or both.")
    token_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    jwks_min_refresh_seconds: float = Field(default=60.0, ge=0)
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    user_status_cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a user's enabled/exists answer from Cognito is reused: a "
        "disabled or deleted user's tokens are refused within this time.",
    )

    # API keys.
    api_key_pepper: SecretStr = Field(
        default=SecretStr(""),
        description="Server-side secret mixed into every key hash (HMAC-SHA256). Set it in production; "
        "changing it invalidates every key.",
    )
    api_key_default_ttl_days: int = Field(default=90, ge=1)
    api_key_max_ttl_days: int = Field(default=365, ge=1)

    # Rate limiting per principal (token bucket).
    rate_limit_per_second: float = Field(default=10.0, gt=0)
    rate_limit_burst: int = Field(default=50, ge=1)

    def resolved_cognito_region(self) -> str:
        return self.cognito_region or self.region

    def app_client_ids(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.cognito_app_client_ids.split(",") if c.strip())

    def accepted_token_uses(self) -> frozenset[str]:
        uses = frozenset(u.strip() for u in self.token_uses.split(",") if u.strip())
        unknown = uses - {"id", "access"}
        if unknown or not uses:
            raise ValueError(f"STAMEN_TOKEN_USES must list id and/or access, got {self.token_uses!r}")
        return uses
