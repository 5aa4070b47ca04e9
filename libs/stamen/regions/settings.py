"""Settings of region health and failover (the regions service and the scheduler's evacuation).

Kept apart from `stamen.settings.Settings`; the same STAMEN_ prefix applies, and every variable is
documented in docs/configuration.md and docs/multi-region.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stamen.domain.regions import HealthPolicy


class RegionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore")

    regions_file: Path | None = Field(
        default=None,
        description="YAML region registry; unset: one region (STAMEN_REGION) built from "
        "NATS_URL, DATABASE_URL and AWS_ENDPOINT_URL.",
    )
    region_probe_interval_seconds: float = Field(default=10.0, gt=0)
    region_probe_timeout_seconds: float = Field(default=3.0, gt=0)
    region_fail_after: int = Field(default=3, ge=1, description="Consecutive failing rounds to go down.")
    region_recover_after: int = Field(default=3, ge=1, description="Consecutive good rounds to come back.")
    region_degraded_latency_ms: float = Field(default=250.0, gt=0)
    region_max_replication_lag_seconds: float = Field(default=30.0, gt=0)
    region_latency_window: int = Field(default=60, ge=1, description="Samples behind the moving average.")
    region_lost_after_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Running worksets in a region down this long are marked lost and retried elsewhere.",
    )
    # The database failover coordinator: off where RDS/Aurora or Patroni promote (production); on for a
    # pair of PostgreSQL servers that stamen itself runs (the loopback multi-region stack).
    region_db_failover: bool = False
    region_db_synchronous: bool = Field(
        default=False,
        description="Keep synchronous_standby_names='*' on the primary while a standby "
        "streams (RPO 0); dropped to asynchronous while none does, so the primary keeps accepting writes.",
    )

    def policy(self) -> HealthPolicy:
        return HealthPolicy(
            fail_after=self.region_fail_after,
            recover_after=self.region_recover_after,
            degraded_latency_ms=self.region_degraded_latency_ms,
            max_replication_lag_seconds=self.region_max_replication_lag_seconds,
            window=self.region_latency_window,
        )
