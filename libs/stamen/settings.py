"""All runtime settings in one place, read from the environment (documented in docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stamen.service.loop import EventLoopChoice


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore")

    # Connections. Unset means "the embedded stack starts one" (see stamen.stack).
    nats_url: str | None = Field(default=None, validation_alias=AliasChoices("NATS_URL", "STAMEN_NATS_URL"))
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "STAMEN_DATABASE_URL")
    )
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "STAMEN_AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-west-2",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "STAMEN_AWS_REGION"),
    )

    # The services' NATS user, for rendering nats-server's authorization block (`stamen nats-auth
    # render`); the password is the one in NATS_URL, and only its bcrypt hash is written.
    nats_service_user: str = "stamen"
    nats_service_password: SecretStr | None = None

    region: str = "us-west-2"
    state_dir: Path = Path(".stamen")
    log_level: str = "INFO"
    log_format: str = "json"

    # Service HTTP (health, readiness, metrics; the portal also serves its pages here).
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # A listening socket handed down by the launcher (`stamen up`): used instead of host and port.
    http_fd: int | None = None

    # Bus behaviour.
    stream_replicas: int = 1
    # Streams (and the database leader record) go to servers carrying all these tags, e.g. the
    # nodes of a cluster that host lifecycle streams; empty: any server.
    stream_placement_tags: list[str] = []
    dedup_window_seconds: float = 600.0
    ack_wait_seconds: float = 30.0
    max_deliver: int = 5
    consumer_concurrency: int = 8
    # workset.submitted handled at once by one validator: a validation mostly waits on S3 and PostgreSQL,
    # so the burst that arrives after an outage is worked off this many at a time (per replica).
    validation_concurrency: int = Field(default=16, ge=1, le=256)
    drain_timeout_seconds: float = 20.0
    # The services' event loop (stamen.service.loop): uvloop when installed ("auto"), or either by name.
    event_loop: EventLoopChoice = "auto"

    # Reconcilers: every interval, worksets that have waited longer than `after` for an event are moved on
    # from PostgreSQL (the event was lost, parked, or is late).
    reconcile_interval_seconds: float = Field(default=15.0, gt=0)
    reconcile_after_seconds: float = Field(default=60.0, ge=0)
    # Messages parked in STAMEN_DLQ after max_deliver are replayed by the reconciler at most this often.
    dlq_auto_replay_max: int = Field(default=3, ge=0)

    # Outbox relay.
    outbox_batch_size: int = 200
    # The relay's safety-net poll: NOTIFY wakes it on every commit (and rows it set aside when they are due).
    outbox_poll_seconds: float = 30.0
    relay_max_attempts: int = Field(default=5, ge=1)  # a row the broker refuses this often is parked
    # After a pass that published, the leader lets commits gather this long before the next claim.
    outbox_batch_window_seconds: float = Field(default=0.05, ge=0)
    inbox_retention_days: float = 31.0  # longer than the events stream keeps messages (30 days)

    # Scheduler.
    scheduler_poll_seconds: float = 1.0
    # With nothing queued, admitted or running, and events flowing (they wake it), the scheduler looks
    # at the database this often instead (a safety net: a workset queued wakes it through its event).
    scheduler_idle_poll_seconds: float = Field(default=30.0, gt=0)
    # Scheduler processes `stamen up` runs side by side (they share the work through PostgreSQL locks).
    scheduler_replicas: int = Field(default=2, ge=1, le=8)
    # Validator processes `stamen up` runs side by side (they share workset.submitted's durable consumer
    # and the NATS intake queue group): a killed validator leaves the other validating.
    validator_replicas: int = Field(default=2, ge=1, le=8)
    default_tenant_max_concurrent: int = 2
    clusters_file: Path | None = None
    pipelines_file: Path | None = None  # extra pipelines for the scheduler, besides the built-in ones
    local_cluster_max_concurrent: int = 2
    work_dir: Path | None = None  # where the local executor runs steps; default <state_dir>/work
    default_max_duration_seconds: int | None = None
    retry_initial_seconds: float = 30.0
    retry_factor: float = 2.0
    retry_cap_seconds: float = 3600.0
    retry_memory_growth: float = 1.5
    retry_memory_max_multiplier: float = 4.0
    default_max_retries: int = 3

    # Product switches, named as in the product brief.
    max_concurrent_worksets: int = 10
    enable_retry: bool = True
    enable_validation: bool = True
    enable_notifications: bool = True

    def resolved_work_dir(self) -> Path:
        return (self.work_dir or self.state_dir / "work").resolve()

    def require_nats_url(self) -> str:
        if not self.nats_url:
            raise RuntimeError(
                "NATS_URL is not set; start the embedded stack with `stamen up` or set NATS_URL"
            )
        return self.nats_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set; start the embedded stack with `stamen up` or set DATABASE_URL"
            )
        return self.database_url
