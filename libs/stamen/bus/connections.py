"""Connecting to NATS and declaring the streams (idempotent: create, or update to match)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import Placement, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from stamen.bus.publisher import JetStreamPublisher, RawMessage
from stamen.bus.subjects import STREAMS
from stamen.service.backoff import FailureBackoff

log = structlog.get_logger(__name__)


async def connect_nats(url: str, *, name: str, on_up: Callable[[bool], None] | None = None) -> NATS:
    """Connected, or waiting (retrying every second) until it is; reconnects forever after that.
    `on_up(False)` is called on each disconnect, `on_up(True)` on each reconnect."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    async def on_disconnect() -> None:
        log.warning("nats.disconnected")
        if on_up is not None:
            on_up(False)

    async def on_reconnect() -> None:
        log.info("nats.reconnected")
        if on_up is not None:
            on_up(True)

    return await nats.connect(
        # NATS_URL may list every node of a cluster, comma-separated; the client also learns the
        # cluster's other nodes from the one it reaches, and moves to them if that one dies.
        [server.strip() for server in url.split(",") if server.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


async def ensure_streams(
    js: JetStreamContext,
    *,
    dedup_window_seconds: float,
    replicas: int = 1,
    placement_tags: Sequence[str] = (),
) -> None:
    placement = Placement(tags=list(placement_tags)) if placement_tags else None
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
            placement=placement,
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


class BusUnavailable(ConnectionError):
    """NATS is not connected (yet, or at the moment): try again later."""

    code = "BUS_UNAVAILABLE"


class BusConnection:
    """A service's NATS connection, opened in the background so that whatever needs only PostgreSQL
    (admission, dispatch, timers, reconcilers) runs while NATS is away. The connect is retried every
    second until NATS answers (then the client reconnects by itself after any later outage); the
    streams are declared once connected. `connected` is set from then on."""

    PUBLISH_WAIT_SECONDS = 30.0

    def __init__(
        self,
        url: str,
        *,
        name: str,
        dedup_window_seconds: float,
        replicas: int = 1,
        placement_tags: Sequence[str] = (),
    ) -> None:
        self._url = url
        self._name = name
        self._dedup_window_seconds = dedup_window_seconds
        self._replicas = replicas
        self._placement_tags = tuple(placement_tags)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self.connected = asyncio.Event()
        self._up = asyncio.Event()  # connected right now (cleared while the client reconnects)
        self._down = asyncio.Event()  # the opposite, for whoever has work only while NATS is away
        self._down.set()
        self._task: asyncio.Task[None] | None = None
        self._on_reconnect: list[Callable[[], None]] = []

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time the client has reconnected (its subscriptions made again): a pull
        request waiting at the server from before may be gone with it (stamen.bus.pull)."""
        self._on_reconnect.append(callback)

    async def start(self, wait_seconds: float = 5.0) -> None:
        """Connect; if NATS does not answer within `wait_seconds`, go on connecting in the background."""
        self._task = asyncio.create_task(self._open(), name="nats-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.connected.wait()), wait_seconds)

    async def _open(self) -> None:
        backoff = FailureBackoff(1.0, 10.0)
        while True:
            nc = await connect_nats(self._url, name=self._name, on_up=self._set_up)  # waits however long
            js = nc.jetstream()
            try:
                await ensure_streams(
                    js,
                    dedup_window_seconds=self._dedup_window_seconds,
                    replicas=self._replicas,
                    placement_tags=self._placement_tags,
                )
            except Exception as exc:
                # JetStream not ready yet, NATS gone again, or a client that came out of a slow connect
                # unable to send (seen on a loaded machine): start over with a new connection.
                delay = backoff.failed()
                log.warning("bus.streams_not_declared", error=str(exc), retry_in=delay)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)
                await asyncio.sleep(delay)
                continue
            break
        self._nc, self._js = nc, js
        self._up.set()
        self._down.clear()
        self.connected.set()
        log.info("bus.connected")

    def _set_up(self, up: bool) -> None:
        if up:
            self._up.set()
            self._down.clear()
            for callback in self._on_reconnect:
                callback()
        else:
            self._up.clear()
            self._down.set()

    async def wait(self) -> None:
        await self.connected.wait()

    async def wait_down(self) -> None:
        """Return once NATS is not connected (at once if it is not now): work that is only for while the
        bus is away waits here instead of asking every second whether it is."""
        await self._down.wait()

    @property
    def up(self) -> bool:
        """Connected right now (False before the first connection and while the client reconnects)."""
        return self._up.is_set()

    @property
    def nc(self) -> NATS:
        if self._nc is None or not self.connected.is_set():
            raise BusUnavailable("not connected to NATS yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BusUnavailable("not connected to NATS yet")
        return self._js

    def status(self) -> str:
        if not self.connected.is_set():
            return "error: connecting"
        assert self._nc is not None
        return "ok" if self._nc.is_connected else "error: disconnected (reconnecting)"

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> bool:
        """Like JetStreamPublisher.publish_raw. While the client reconnects it waits (up to
        PUBLISH_WAIT_SECONDS) rather than fail at once, so a relay catches up the moment NATS is back
        instead of after its failure backoff; BusUnavailable if NATS does not come back by then."""
        await self._wait_up()
        return await JetStreamPublisher(self.js).publish_raw(subject, body, headers)

    async def publish_many(self, messages: Sequence[RawMessage]) -> list[bool | Exception]:
        """Like JetStreamPublisher.publish_many, waiting for a reconnecting client as publish_raw does."""
        await self._wait_up()
        return await JetStreamPublisher(self.js).publish_many(messages)

    async def _wait_up(self) -> None:
        try:
            await asyncio.wait_for(self._up.wait(), self.PUBLISH_WAIT_SECONDS)
        except TimeoutError:
            raise BusUnavailable(f"NATS has not been reachable for {self.PUBLISH_WAIT_SECONDS:g}s") from None

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
