"""Pull requests that wait at the server: `LongPoll` (a fetch per wait; the dead-letter forwarders) and
`PullStream` (requests left open, served message by message; the durable consumers).

Long-poll fetches of a pull subscription: one request waits at the server until messages arrive.

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
import json
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


class PullStream:
    """A consumer's messages one at a time, from pull requests left open at the server: a request for a
    batch stays there until the batch is delivered (message by message, as they are published) or it
    expires, so a message costs its delivery and its ack. A fetch per arrival (`LongPoll`, nats-py's
    `fetch`) cost a request and the server's closing status besides: of the messages between a service
    and NATS, one in three. `ask(free)` keeps about `free` messages asked for (the consumer's free
    handler slots): it asks for the slots not already covered by open requests once they are at least
    half of them, so a consumer asks once per few messages and never holds more than its slots.

    The server ends a request it expires, or gives up (409), with a status carrying how many messages
    of it were left undelivered; those are asked for again. A request the server forgot (NATS
    restarted): `cut_short()` on reconnect, as for `LongPoll`, and requests are then short for a while;
    and no message or status for longer than a request lasts counts as every request gone."""

    PENDING = "Nats-Pending-Messages"

    def __init__(self, sub: JetStreamContext.PullSubscription, wait_seconds: float | None = None) -> None:
        self._sub = sub
        self._wait_seconds = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._asked = 0  # messages asked for that the server has neither delivered nor given up on
        self._short_until = 0.0
        self._waiting: asyncio.Future[Msg] | None = None

    @property
    def asked(self) -> int:
        return self._asked

    def _wait(self) -> float:
        short = time.monotonic() < self._short_until
        return min(SHORT_WAIT_SECONDS, self._wait_seconds) if short else self._wait_seconds

    async def ask(self, free: int) -> None:
        want = free - self._asked
        if want <= 0 or (self._asked > 0 and want < max(1, free // 2)):
            return
        expires_ns = int(self._wait() * 1_000_000_000)
        request = json.dumps({"batch": want, "expires": expires_ns}).encode()
        await self._sub._nc.publish(self._sub._nms, request, reply=self._sub._deliver)
        self._asked += want

    async def next(self) -> Msg | None:
        """The next message; None when the server gave up on a request (ask again), when nothing came for
        longer than a request lasts, or when cut short. Taken straight from the subscription's queue
        (nats-py's `next_msg` makes a task and a uuid per call); a task only to wait on an empty one."""
        sub = self._sub._sub
        queue = sub._pending_queue
        if not queue.empty():
            msg = queue.get_nowait()
        else:
            waiting: asyncio.Future[Msg] = asyncio.ensure_future(queue.get())
            self._waiting = waiting
            try:
                await asyncio.wait({waiting}, timeout=self._wait() + 5.0)
            finally:
                self._waiting = None
                if not waiting.done():
                    waiting.cancel()  # cancelled itself, or nothing came in time
            if waiting.cancelled():
                return None  # cut_short(): the caller asks again
            if not waiting.done():
                self._asked = 0  # every request has expired by now, its status lost: ask again
                return None
            msg = waiting.result()
        sub._pending_size -= len(msg.data)
        queue.task_done()
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            self._asked = max(0, self._asked - 1)
            return msg
        if status == "100":  # a heartbeat (none is asked for): nothing to do
            return None
        pending = msg.headers.get(self.PENDING) if msg.headers else None
        # 408 (expired) and 409 (given up) say what was left of the request; without it, assume all.
        self._asked = max(0, self._asked - int(pending)) if pending and pending.isdigit() else 0
        return None

    def cut_short(self) -> None:
        """The client reconnected: the requests waiting at the server may be gone; ask again, with short
        requests for a while."""
        self._short_until = time.monotonic() + SHORT_WAITS_FOR_SECONDS
        self._asked = 0
        if self._waiting is not None:
            self._waiting.cancel()
