"""Settings of workset intake (storage checks, the S3 drop watcher, NATS and HTTP intake).

Kept apart from `stamen.settings.Settings` so intake can grow its own knobs; the same STAMEN_ prefix
applies, and every variable is documented in docs/intake.md.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from stamen.domain.workset import check_tenant_id
from stamen.worksets.limits import MAX_DOCUMENT_BYTES


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAMEN_", extra="ignore")

    # Storage checks.
    sniff_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Bytes read from the start of each input for content sniffing.",
    )
    gzip_verify_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="A plain-gzip input whose trailer does not vouch for its end "
        "is decompressed whole to check it, up to this size (larger: SNF-GZ-006). BGZF never needs it.",
    )
    storage_concurrency: int = Field(
        default=16, ge=1, le=256, description="S3 calls in flight at once per validation."
    )
    storage_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Connect/read timeout per S3 call."
    )
    reference_location: str | None = Field(
        default=None,
        description="Where reference genomes live, e.g. s3://refs/{genome}/ ({genome} is the "
        "registry key, {daylily_name} Daylily's name; without a placeholder the "
        "genome key is appended). Unset: reference files are not checked.",
    )
    seed_demo_data: str = Field(
        default="auto",
        pattern="^(auto|true|false)$",
        description="Upload the demo workset's FASTQs: auto = only when "
        "AWS_ENDPOINT_URL is a loopback emulator.",
    )

    # S3 drop watcher.
    drop_buckets: str = Field(
        default="", description="Comma-separated buckets to watch, each `bucket` or `bucket=tenant`."
    )
    drop_prefix: str = "daylily_monitoring/active_worksets/"
    drop_poll_seconds: float = Field(default=2.0, gt=0)
    drop_rescan_every: int = Field(
        default=15,
        ge=1,
        description="Folders already picked up are re-listed every N passes (to see a new daylily.ready).",
    )
    drop_default_tenant: str = "default"

    # Request/reply and HTTP intake.
    intake_queue_group: str = "stamen-intake"
    intake_concurrency: int = Field(default=16, ge=1)
    api_max_body_bytes: int = Field(
        default=MAX_DOCUMENT_BYTES,
        ge=1024,
        description="The largest body the API "
        "reads; the document limit by default, so the API takes the largest workset.",
    )
    api_body_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A request body that has not "
        "arrived in full by then is answered 408 and its connection closed.",
    )

    def drop_tenant(self, bucket: str, info: bytes | None) -> str:
        """Whose workset a dropped folder is: the bucket's tenant in STAMEN_DROP_BUCKETS (`bucket=tenant`),
        else daylily_info.yaml's customer_id, else STAMEN_DROP_DEFAULT_TENANT."""
        from stamen.inputs.folders import folder_tenant  # folders imports the storage layer; keep it lazy

        return self.watched_buckets().get(bucket) or folder_tenant(info, default=self.drop_default_tenant)

    def watched_buckets(self) -> dict[str, str | None]:
        """bucket -> tenant it belongs to (None: from daylily_info.yaml, else the default tenant)."""
        buckets: dict[str, str | None] = {}
        for item in self.drop_buckets.split(","):
            bucket, _, tenant = item.strip().partition("=")
            if bucket:
                buckets[bucket.strip()] = check_tenant_id(tenant.strip()) if tenant.strip() else None
        return buckets

    def normalised_drop_prefix(self) -> str:
        prefix = self.drop_prefix.strip("/")
        return prefix + "/" if prefix else ""
