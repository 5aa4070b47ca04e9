"""Settings of customer onboarding, quotas and usage (STAMEN_ prefix; documented in docs/customers-and-auth.md)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CustomerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore", populate_by_name=True)

    region: str = Field(default="us-west-2", description="Region the customer's bucket and topic live in.")
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL", "STAMEN_AWS_ENDPOINT_URL"),
        description="S3/SNS/Cognito endpoint (moto in the embedded stack and tests); unset = real AWS.",
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "STAMEN_DATABASE_URL")
    )
    aws_emulator_credentials: bool = Field(
        default=False,
        description="Sign AWS calls with dummy credentials: for an emulator (moto accepts any), so real "
        "credentials are never sent to it. Set by CustomerManager when it uses the embedded stack's moto.",
    )

    # Names. {customer_id} and {region} are substituted; S3 bucket names are made safe and kept <= 63 chars.
    customer_bucket_template: str = "stamen-{customer_id}-{region}"
    customer_topic_template: str = "stamen-{customer_id}-events"

    # Bucket lifecycle: prefixes and ages (days).
    intermediate_prefix: str = "intermediate/"
    intermediate_expire_days: int = Field(default=14, ge=1)
    results_prefix: str = "results/"
    results_transition_days: int = Field(default=30, ge=30, description="S3 requires >= 30 for STANDARD_IA.")
    results_storage_class: str = Field(
        default="STANDARD_IA", pattern="^(STANDARD_IA|ONEZONE_IA|INTELLIGENT_TIERING|GLACIER_IR)$"
    )
    noncurrent_version_expire_days: int = Field(default=30, ge=1)
    abort_multipart_days: int = Field(default=7, ge=1)

    # Defaults for onboarding arguments left out.
    default_max_concurrent_worksets: int = Field(default=10, ge=0)
    default_max_storage_gb: float = Field(default=1000.0, ge=0)

    # Cognito: the pool customers' users live in (shared with AuthSettings: same variables).
    cognito_region: str | None = Field(default=None, description="Defaults to `region`.")
    cognito_user_pool_id: str | None = None
    cognito_user_pool_name: str = "stamen"
    cognito_create_pool: bool = Field(
        default=False,
        description="Create the pool, its app client and the operators group when missing "
        "(embedded stack). Production pools are made by infrastructure code.",
    )
    cognito_operator_group: str = "operators"

    def resolved_cognito_region(self) -> str:
        return self.cognito_region or self.region
