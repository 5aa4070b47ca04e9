"""Long-poll fetches of a pull subscription: one request waits at the server until messages arrive.

A fetch that found nothing used to expire after 1 s and be made again: ~1.4 requests a second for each
of a deployment's ~30 fetch loops when nothing happens (two requests per expiry in nats-py's batch
fetch), each one waking the service, NATS and its timers. Here a request lasts up to `WAIT_SECONDS`;
the server answers it the moment a message arrives (with a batch it returns what is there, it does
not wait for the batch to fill), so waiting longer costs no latency.

What a long request risks is a request the server no longer holds: a NATS that restarted forgot it,
and the fetch would sit out the rest of its wait while messages pile up. `cut_short()` (called when
the client reconnects) ends the fetch in flight, and the loop asks again at once. The client
reconnects as soon as the port opens, which can be before JetStream has recovered its store and
answers pull requests (one made then is dropped), so for `SHORT_WAITS_FOR_SECONDS` after that the
fetches wait `SHORT_WAIT_SECONDS`, as they all did before. Messages delivered to the subscription's
inbox meanwhile are not lost: the next fetch takes them from the inbox first.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.msg import Msg
from nats.js import JetStreamContext

# How long one pull request waits at the server for a message (an expiry is a status message, a wake-up).
WAIT_SECONDS = 30.0
# After a reconnect: short requests for a while, until JetStream surely answers again.
SHORT_WAIT_SECONDS = 1.0
SHORT_WAITS_FOR_SECONDS = 30.0


class LongPoll:
    def __init__(self, sub: JetStreamContext.PullSubscription, wait_seconds: float | None = None) -> None:
        self._sub = sub
        self._wait_seconds = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._in_flight: asyncio.Future[list[Msg]] | None = None
        self._short_until = 0.0

    async def fetch(self, batch: int) -> list[Msg]:
        """Up to `batch` messages, as soon as there are any; [] when cut short. Raises the client's
        timeout error when the wait ends with none (as `PullSubscription.fetch` does)."""
        short = time.monotonic() < self._short_until
        wait = min(SHORT_WAIT_SECONDS, self._wait_seconds) if short else self._wait_seconds
        fetching = asyncio.ensure_future(self._sub.fetch(batch=batch, timeout=wait))
        self._in_flight = fetching
        try:
            return await fetching
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if fetching.cancelled() and task is not None and not task.cancelling():
                return []  # cut_short(): the caller asks again
            raise
        finally:
            self._in_flight = None

    def cut_short(self) -> None:
        """End the fetch in flight (its request may have died with the connection it was made on); the
        next ones are short for a while."""
        self._short_until = time.monotonic() + SHORT_WAITS_FOR_SECONDS
        if self._in_flight is not None:
            self._in_flight.cancel()
