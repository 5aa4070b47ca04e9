"""How stamen's AWS clients (S3, SNS, Cognito, Secrets Manager; real AWS or its emulator) wait: bounded
connect and read timeouts and a few retries, so an endpoint that does not answer fails a call in seconds
instead of holding it for botocore's defaults (60 s per attempt, up to five attempts)."""

from __future__ import annotations

from typing import Any

from botocore.config import Config

AWS_TIMEOUT_SECONDS = 10.0
AWS_MAX_ATTEMPTS = 3


def client_config(timeout_seconds: float = AWS_TIMEOUT_SECONDS, **extra: Any) -> Config:
    """The botocore Config every client is made with (`extra`: e.g. max_pool_connections)."""
    return Config(
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        retries={"max_attempts": AWS_MAX_ATTEMPTS, "mode": "standard"},
        **extra,
    )
