"""Settings of notifications (STAMEN_NOTIFY_ prefix; documented in docs/configuration.md and
docs/notifications.md). Read by the notifier, the portal's preference routes and `stamen notify`."""

from __future__ import annotations

import json
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stamen.notifications.ratelimits import LINEAR_REQUESTS_PER_HOUR, SLACK_MESSAGES_PER_SECOND, RateLimit
from stamen.retry.backoff import BackoffPolicy


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_NOTIFY_", extra="ignore", populate_by_name=True)

    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "STAMEN_AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-west-2",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "STAMEN_AWS_REGION"),
    )

    # Delivery.
    max_attempts: int = Field(default=10, ge=1, description="Tries of one delivery before it is failed.")
    backoff_initial_seconds: float = Field(default=5.0, gt=0)
    backoff_cap_seconds: float = Field(default=900.0, gt=0)
    send_timeout_seconds: float = Field(default=15.0, gt=0, description="One send, all its requests.")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed delivery whose sender died is sent again after this."
    )
    channel_concurrency: int = Field(default=4, ge=1, description="Sends in flight per channel.")
    # Inserts wake the worker (NOTIFY; it listens again if its connection was lost) and it sleeps until the next
    # delivery is due: the poll only catches what neither told it. Each loop's poll was its wake-ups at rest.
    poll_seconds: float = Field(default=30.0, gt=0, description="Safety-net poll; inserts wake the worker.")
    max_event_age_hours: float = Field(
        default=24.0, gt=0, description="Older events are recorded but not announced (e.g. a first start)."
    )

    # Rate limits (see stamen.notifications.ratelimits for where the defaults come from).
    linear_requests_per_hour: float = Field(default=LINEAR_REQUESTS_PER_HOUR, gt=0)
    linear_burst: float = Field(default=50, ge=1)
    slack_per_second: float = Field(default=SLACK_MESSAGES_PER_SECOND, gt=0)
    slack_burst: float = Field(default=1, ge=1)
    webhook_per_second: float = Field(default=10.0, gt=0)
    webhook_burst: float = Field(default=20, ge=1)
    sns_per_second: float = Field(default=100.0, gt=0)
    sns_burst: float = Field(default=200, ge=1)

    # Channels.
    linear_api_url: str = "https://api.linear.app/graphql"
    portal_url: str | None = Field(default=None, description="Base URL for links to worksets in messages.")
    operator_topic_arn: str | None = Field(default=None, description="SNS topic of the operators' alerts.")
    webhook_allow_http: bool = Field(default=False, description="Allow http:// webhook URLs (tests, labs).")
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhooks to loopback, private and link-local addresses (refused by default: "
        "the notifier must not be a way into the network it runs in).",
    )

    # Secrets: the Linear API key and webhook signing secret of each owner.
    secret_store: Literal["aws", "settings"] = Field(
        default="aws",
        description="aws: AWS Secrets Manager (moto in the embedded stack); settings: read-only.",
    )
    secrets: SecretStr | None = Field(
        default=None,
        description='For secret_store=settings: a JSON object {"<secret name>": "<value>"}; names in '
        "docs/notifications.md.",
    )
    secret_cache_seconds: float = Field(default=60.0, ge=0)

    # Operators' alert on dead letters piling up.
    dlq_alert_threshold: int = Field(default=5, ge=1)
    dlq_alert_window_minutes: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Self:
        if self.lease_seconds <= self.send_timeout_seconds:
            raise ValueError(
                f"STAMEN_NOTIFY_LEASE_SECONDS ({self.lease_seconds:g}) must be longer than "
                f"STAMEN_NOTIFY_SEND_TIMEOUT_SECONDS ({self.send_timeout_seconds:g}), or a slow send "
                "would be taken over and sent twice"
            )
        if self.backoff_cap_seconds < self.backoff_initial_seconds:
            raise ValueError(
                "STAMEN_NOTIFY_BACKOFF_CAP_SECONDS must be >= STAMEN_NOTIFY_BACKOFF_INITIAL_SECONDS"
            )
        return self

    def backoff(self) -> BackoffPolicy:
        return BackoffPolicy(
            initial_seconds=self.backoff_initial_seconds, factor=2.0, cap_seconds=self.backoff_cap_seconds
        )

    def static_secrets(self) -> dict[str, str]:
        if self.secrets is None:
            return {}
        try:
            doc = json.loads(self.secrets.get_secret_value())
        except json.JSONDecodeError:
            raise ValueError("STAMEN_NOTIFY_SECRETS must be a JSON object of secret name -> value") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise ValueError("STAMEN_NOTIFY_SECRETS must be a JSON object of secret name -> string value")
        return {str(k): v for k, v in doc.items()}

    def limit(self, name: str) -> RateLimit:
        return {
            "linear": RateLimit(self.linear_requests_per_hour / 3600.0, self.linear_burst),
            "slack": RateLimit(self.slack_per_second, self.slack_burst),
            "webhook": RateLimit(self.webhook_per_second, self.webhook_burst),
            "sns": RateLimit(self.sns_per_second, self.sns_burst),
        }[name]
