"""Connecting to NATS and declaring the streams (idempotent: create, or update to match)."""

from __future__ import annotations

from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from stamen.bus.subjects import STREAMS

log = structlog.get_logger(__name__)


async def connect_nats(url: str, *, name: str) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    async def on_disconnect() -> None:
        log.warning("nats.disconnected")

    async def on_reconnect() -> None:
        log.info("nats.reconnected")

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_streams(js: JetStreamContext, *, dedup_window_seconds: float, replicas: int = 1) -> None:
    for definition in STREAMS:
        config = StreamConfig(
            name=definition.name,
            description=definition.description,
            subjects=list(definition.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=definition.max_age_seconds,
            duplicate_window=min(dedup_window_seconds, definition.max_age_seconds),
            num_replicas=replicas,
        )
        try:
            await js.stream_info(definition.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("bus.stream_created", stream=definition.name)
        else:
            await js.update_stream(config)


def headers_of(msg_headers: dict[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (msg_headers or {}).items()}
