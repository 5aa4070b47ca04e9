"""The outbox relay: publishes committed outbox rows to JetStream and deletes them.

Woken by LISTEN/NOTIFY on commit, with a slow poll as a safety net (`poll_seconds`, 30 s: a live
LISTEN session misses no NOTIFY, and a lost one wakes the relay; the rows it set aside wake it when their
next attempt is due); a failed pass is tried again
after a growing delay (1 s doubling to 30 s, back to 1 s after a success). Rows are claimed with
FOR UPDATE SKIP LOCKED so any number of relays can run, and deleted by the same statement in a
transaction that commits once the broker has stored them (nothing reads a published row: a reconciler
rebuilds the event it waits for from the database). If a relay dies after publishing but
before that commit, the row is published again and the server drops it as a duplicate (Nats-Msg-Id).

Leadership: every service runs a relay, but one per deployment does the work. A relay made with a
`leader_lock` (every service's, and `stamen relay`) first takes that PostgreSQL session advisory lock
on a connection of its own; only the holder LISTENs for commits and claims rows. The others wait for
the lock in PostgreSQL (a lock request renewed every `LOCK_WAIT_SECONDS`, so no snapshot is held
longer), so one takes over the moment the leader's session ends: a leader that stops unlocks, one
that dies loses its session and the lock with it, and one whose passes kept failing for
`STEP_DOWN_AFTER_SECONDS` steps down. The waiting relays LISTEN on nothing: PostgreSQL wakes every
listening session of a database for every NOTIFY (a transaction each), whatever its channel. Two relays
working at once (a leader that has not noticed its session ended) are still safe: the claim's row locks
keep each row to one of them. The leader publishes a batch without waiting for each ack (one round trip
per pass), and after a pass that published it lets commits gather for `batch_window_seconds` before the
next, so a busy system costs one claim transaction for many events.

Awake and asleep: a leader that has just published stays awake, claiming again after every batch window
without being told, and holds RELAY_AWAKE_LOCK meanwhile; the outbox's trigger then sends no NOTIFY (~0.1 ms
of PostgreSQL's CPU per transaction, and a wake-up of this process). A pass that finds nothing puts it to
sleep: it gives the lock up (commits NOTIFY again from then on), waits until every transaction that found
it awake has ended (each holds OUTBOX_WRITERS_LOCK shared until then), and claims once more, so no row is
left for the poll (a commit's NOTIFY during that wait makes it awake again at once, or, while a writer that
found it asleep keeps it from that, has it claim that commit's rows and wait on: a NOTIFY is taken once, and
no commit waits for the moment no writer is open); then a NOTIFY wakes it as before.

Two kinds of failure: the broker unreachable (timeouts, a closed connection, no stream answering) says
nothing about the rows, so the pass backs off and no row is blamed; the broker refusing one row (larger
than its max payload, refused by the stream) is that row's problem: it is set aside, tried again after
1 s, 2 s, 4 s, ... and parked after `max_attempts`, while the rows behind it are published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import asyncpg.pool
import structlog
from nats.errors import MaxPayloadError
from nats.js.errors import APIError

from stamen.bus.consumer import DependencyGate
from stamen.bus.metrics import OUTBOX_REFUSED, PUBLISHED
from stamen.bus.publisher import BatchPublisher, RawPublisher
from stamen.retry.backoff import BackoffPolicy
from stamen.service.backoff import FailureBackoff
from stamen.settings import Settings
from stamen.store.db import keeps_session_state, still_open
from stamen.store.inbox import Inbox
from stamen.store.outbox import NOTIFY_CHANNEL, OutboxQueue, OutboxRow

log = structlog.get_logger(__name__)

# The session advisory lock whose holder is the deployment's relay (any constant shared by all of them).
RELAY_LEADER_LOCK = 0x5354414D4F42  # "STAMOB"
# Held by the leading relay while it is awake (it claims again after every batch window, so commits need
# not wake it), and shared, from its trigger to its commit, by every transaction that writes events. The
# outbox's trigger (migration 0023) reads both: the numbers are written there too.
RELAY_AWAKE_LOCK = 0x5354414D4157  # "STAMAW"
OUTBOX_WRITERS_LOCK = 0x5354414D4F57  # "STAMOW"


class OutboxRelay:
    # Housekeeping runs at most this often per relay; several relays purging at once is harmless.
    PURGE_EVERY_SECONDS = 3600.0
    ERROR_BACKOFF = (1.0, 30.0)  # after a failed pass (NATS or the database down): first delay, cap
    # Between attempts at a row the broker refused: 1 s, 2 s, 4 s, ... up to 60 s.
    ROW_BACKOFF = BackoffPolicy(initial_seconds=1.0, factor=2.0, cap_seconds=60.0, jitter="none")
    # Longest idle moment inside a pass (a batch's acks come back within the publish timeout, 5 s).
    HOLD_ROWS_SECONDS = 15.0
    # A leader whose passes have failed this long steps down, so a relay that can publish may lead.
    STEP_DOWN_AFTER_SECONDS = 15.0
    # A waiting relay's lock request lasts this long and is then made again (PostgreSQL's lock_timeout).
    LOCK_WAIT_SECONDS = 30.0
    # A relay falling asleep asks after this long (doubling up to 0.1 s) whether the writers that found it
    # awake have all ended.
    WRITERS_WAIT_SECONDS = 0.005

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: RawPublisher,
        *,
        batch_size: int = 200,
        poll_seconds: float = 30.0,
        inbox_retention_days: float = 31.0,
        max_attempts: int = 5,
        leader_lock: int | None = None,
        batch_window_seconds: float = 0.0,
        postgres: DependencyGate | None = None,
    ) -> None:
        # A pass that failed while PostgreSQL is unreachable waits for it to answer, then goes on at once
        # (rather than sit out a backoff grown during a long outage).
        self._postgres = postgres
        self._leader_lock = leader_lock
        self._batch_window_seconds = batch_window_seconds
        self.leading = leader_lock is None  # without a lock every relay works (rows stay safe either way)
        self._awake = False  # holds RELAY_AWAKE_LOCK (a leader only): commits send no NOTIFY meanwhile
        self._failing_since: float | None = None
        self._max_attempts = max_attempts
        self._inbox_retention_days = inbox_retention_days
        self._next_purge = 0.0
        self._pool = pool
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._backoff = FailureBackoff(*self.ERROR_BACKOFF)
        self._task: asyncio.Task[None] | None = None
        self._set_aside = 0  # rows of the last pass the broker refused
        self._retry_due: float | None = None  # when the first row this relay set aside may be tried again
        self._listen_conn: asyncpg.pool.PoolConnectionProxy | None = None

    @property
    def awake(self) -> bool:
        """Whether this leader claims again after every batch window (commits send it no NOTIFY meanwhile)."""
        return self._awake

    @classmethod
    def from_settings(
        cls,
        pool: asyncpg.Pool,
        publisher: RawPublisher,
        settings: Settings,
        postgres: DependencyGate | None = None,
    ) -> OutboxRelay:
        return cls(
            pool,
            publisher,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            inbox_retention_days=settings.inbox_retention_days,
            max_attempts=settings.relay_max_attempts,
            leader_lock=RELAY_LEADER_LOCK,
            batch_window_seconds=settings.outbox_batch_window_seconds,
            postgres=postgres,
        )

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def _listen(self) -> None:
        """A connection of its own, for LISTEN and the leader lock; opened again when the database
        restarted (the old one is closed then, the lock gone with it, and until it is back the poll is
        the only wake-up)."""
        if self._listen_conn is not None and still_open(self._listen_conn):
            return
        if self._listen_conn is not None:
            await self._release_listen_conn()
            self._awake = False  # the lock went with the session
            if self._leader_lock is not None and self.leading:
                self.leading = False
                log.warning("outbox.relay_leadership_lost", reason="its database connection closed")
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            log.warning("outbox.listen_failed", error=str(exc))
            return
        self._listen_conn = conn
        try:
            # A session that ends (database restart, terminated) wakes the loop, which opens another and,
            # if this relay led, contends again: the lock went with the session.
            conn.add_termination_listener(self._on_connection_lost)
            if self._leader_lock is None:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            else:
                keeps_session_state(conn)  # the lock, lock_timeout: reset when the pool takes it back
                await conn.execute(f"SET lock_timeout = '{int(self.LOCK_WAIT_SECONDS * 1000)}ms'")
        except Exception as exc:
            log.warning("outbox.listen_failed", error=str(exc))
            await self._release_listen_conn()

    async def _release_listen_conn(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._on_connection_lost)
        with contextlib.suppress(Exception):
            await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    def _on_connection_lost(self, *_: object) -> None:
        self._wake.set()

    async def _lead(self) -> bool:
        """Whether this relay does the work now: always without a leader lock; with one, if it holds
        the lock or has just taken it (then it LISTENs for commits). Waits for the lock up to
        LOCK_WAIT_SECONDS: a relay that is not leading has nothing else to do."""
        if self.leading:
            return True
        conn = self._listen_conn
        if conn is None or self._leader_lock is None:
            return False
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", self._leader_lock)
        except asyncpg.LockNotAvailableError:
            return False  # still led by another: ask again
        except Exception as exc:  # the connection went away: opened again by the next _listen()
            log.warning("outbox.relay_lead_failed", error=str(exc))
            await self._wait_for(self._stopping, 1.0)
            return False
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:
            log.warning("outbox.relay_lead_failed", error=str(exc))
            return False  # the session ends, and the lock with it
        self.leading = True
        self._failing_since = None
        log.info("outbox.relay_leading")
        return True

    async def _step_down(self, reason: str) -> None:
        """Give up the leader lock: a waiting relay has it at once."""
        conn = self._listen_conn
        if self._leader_lock is None or not self.leading or conn is None:
            return
        self.leading = False
        awake, self._awake = self._awake, False
        try:
            if awake:
                await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_AWAKE_LOCK)
            await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await conn.execute("SELECT pg_advisory_unlock($1)", self._leader_lock)
        except Exception as exc:  # the session is gone, and the lock with it
            log.warning("outbox.relay_step_down_failed", error=str(exc))
        log.info("outbox.relay_stepped_down", reason=reason)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        last_pass = 0.0
        while not self._stopping.is_set():
            await self._listen()
            if self._listen_conn is None:
                # No connection of its own: the database is away. Wait for it instead of asking again at
                # once (that spun on refused connections, hundreds a second, for the whole outage).
                await self._wait_for_database()
                continue
            if not await self._lead():
                continue  # not leading: nothing to claim, and no NOTIFY of a commit reaches this relay
            # Cleared before the pass, so a NOTIFY that arrives during it wakes the next wait at once.
            self._wake.clear()
            started = time.monotonic()
            try:
                sent = await self.publish_pending()
            except Exception as exc:
                if self._postgres is not None and not await self._postgres.check():
                    # The leader lock went with the database session: contend again once it answers.
                    log.warning("outbox.waiting_for_postgres", error=str(exc))
                    await _first(self._postgres.wait_reachable(), self._stopping.wait())
                    self._backoff.succeeded()
                    continue
                delay = self._backoff.failed()
                log.warning("outbox.relay_failed", error=str(exc), retry_in=delay)
                self._failing_since = self._failing_since or started
                if started - self._failing_since >= self.STEP_DOWN_AFTER_SECONDS:
                    await self._step_down(
                        f"its passes have failed for {started - self._failing_since:.0f}s: {exc}"
                    )
                # The claimed rows are back (rolled back): try again after the backoff, without waiting for
                # a NOTIFY or the poll. Only stop() cuts the backoff short: commits during an outage
                # must not turn it into a busy loop of failing publishes.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            self._backoff.succeeded()
            self._failing_since = None
            if sent:
                last_pass = started
            if sent + self._set_aside >= self._batch_size:
                continue  # more are waiting
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + self.PURGE_EVERY_SECONDS
                try:
                    await self.purge_history()
                except Exception as exc:
                    log.warning("outbox.purge_failed", error=str(exc))
            if self._leader_lock is not None:
                if sent and await self._stay_awake():
                    # Awake: commits send no NOTIFY now; claim again once this burst's have gathered.
                    await self._wait_for(
                        self._stopping, last_pass + self._batch_window_seconds - time.monotonic()
                    )
                    continue
                if not sent and self._awake:
                    await self._fall_asleep()
                    continue  # one more pass: the rows of the writers it waited for
            await self._wait_for(self._wake, self._idle_seconds())
            # Busy (the last pass published): let the commits of this burst gather into one claim.
            gather = last_pass + self._batch_window_seconds - time.monotonic()
            if gather > 0 and not self._stopping.is_set():
                await asyncio.sleep(gather)

    async def _stay_awake(self) -> bool:
        """Whether this leader is awake: holds RELAY_AWAKE_LOCK, taken now if it can be (a writer checking
        it at this moment holds it shared for an instant: then the next pass tries again)."""
        conn = self._listen_conn
        if self._awake or conn is None:
            return self._awake
        try:
            self._awake = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_AWAKE_LOCK))
        except (
            Exception
        ) as exc:  # the session is gone (its locks with it): asleep, NOTIFY wakes whoever leads
            log.warning("outbox.relay_wake_failed", error=str(exc))
        return self._awake

    async def _fall_asleep(self) -> None:
        """Give up RELAY_AWAKE_LOCK (commits send their NOTIFY from now on), then wait until every writer that
        found this relay awake, and so sent none, has ended: each holds OUTBOX_WRITERS_LOCK shared until it
        commits or rolls back, so taking it exclusively for an instant says none is left. The pass after
        this claims their rows; a transaction with events still open then found the lock free, and NOTIFYs."""
        self._awake = False
        conn = self._listen_conn
        if conn is None:
            return
        try:
            row = await conn.fetchrow(
                "SELECT pg_advisory_unlock($1), "
                "CASE WHEN pg_try_advisory_lock($2) THEN pg_advisory_unlock($2) ELSE false END",
                RELAY_AWAKE_LOCK, OUTBOX_WRITERS_LOCK,
            )  # fmt: skip
            clear = bool(row is not None and row[1])
            wait = self.WRITERS_WAIT_SECONDS
            while not clear and not self._stopping.is_set():
                await self._wait_for(self._wake, wait)  # stop() sets it too
                if self._wake.is_set():
                    # A commit's NOTIFY, taken once: left set, every wait after it returned at once, and a
                    # writer that stayed open (with another that found the relay asleep) had the relay ask
                    # for both locks in a loop, thousands of transactions a second.
                    self._wake.clear()
                    if await self._stay_awake():
                        # Claim it now rather than after a long writer ends. Awake again, the passes to
                        # come claim that writer's rows too; the next to find nothing retries.
                        return
                    # Not awake (a writer that found it asleep holds the awake lock shared): the commit's
                    # rows are claimed now all the same, not after every writer has ended (under steady
                    # load that moment may not come for long); still falling asleep, it goes on waiting
                    # for the writers that found it awake.
                    await self.publish_pending()
                wait = min(wait * 2, 0.1)  # a long transaction that wrote events: ask less often
                clear = await conn.fetchval(
                    "SELECT CASE WHEN pg_try_advisory_lock($1) THEN pg_advisory_unlock($1) ELSE false END",
                    OUTBOX_WRITERS_LOCK,
                )
        except Exception as exc:  # the session is gone, the lock with it; the next pass finds the rows
            log.warning("outbox.relay_sleep_failed", error=str(exc))

    def _idle_seconds(self) -> float:
        """How long to wait for a NOTIFY: the poll, or less if a row set aside is due before it."""
        if self._retry_due is None:
            return self._poll_seconds
        return min(self._poll_seconds, max(0.0, self._retry_due - time.monotonic()))

    async def _wait_for_database(self) -> None:
        if self._postgres is not None and not await self._postgres.check():
            await _first(self._postgres.wait_reachable(), self._stopping.wait())
        else:
            await self._wait_for(self._stopping, 1.0)

    async def _wait_for(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)

    async def publish_pending(self) -> int:
        """One batch: claim (deleting the rows, uncommitted), publish in order, commit. Returns how many
        rows were published.

        A row the broker refuses is set aside (or parked) in the same transaction; an unreachable broker
        raises, so the whole pass is rolled back and tried again later."""
        if self._retry_due is not None and self._retry_due <= time.monotonic():
            self._retry_due = None  # due: this pass claims it (and sets it aside again if refused)
        async with self._pool.acquire() as conn, _hold_rows_transaction(conn, self.HOLD_ROWS_SECONDS):
            queue = OutboxQueue(conn)
            # Claimed rows are deleted by the claim itself: the COMMIT after the publish makes it so
            # (three round trips a pass: BEGIN, the claim, COMMIT).
            rows = await queue.claim(self._batch_size)
            published = 0
            refused: list[tuple[OutboxRow, Exception]] = []
            for row, outcome in zip(rows, await self._publish(rows), strict=True):
                if isinstance(outcome, Exception):
                    if not refuses_the_row(outcome):
                        raise outcome  # the broker is unreachable: the rollback puts every row back
                    refused.append((row, outcome))
                    continue
                PUBLISHED.labels("stored" if outcome else "duplicate").inc()
                published += 1
            for row, refusal in refused:
                await self._set_row_aside(queue, row, refusal)
            self._set_aside = len(refused)
            return published

    async def _publish(self, rows: list[OutboxRow]) -> list[bool | Exception]:
        """Each row's outcome, in order: stored (True), a duplicate (False), or what the broker said."""
        if not rows:
            return []
        if isinstance(self._publisher, BatchPublisher):
            return await self._publisher.publish_many([(r.subject, r.body, r.headers) for r in rows])
        outcomes: list[bool | Exception] = []
        for row in rows:
            try:
                outcomes.append(await self._publisher.publish_raw(row.subject, row.body, row.headers))
            except Exception as exc:
                if not refuses_the_row(exc):
                    raise
                outcomes.append(exc)
        return outcomes

    async def _set_row_aside(self, queue: OutboxQueue, row: OutboxRow, exc: Exception) -> None:
        attempt = row.attempts + 1
        park = attempt >= self._max_attempts
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        retry_in = self.ROW_BACKOFF.delay_for(attempt)
        await queue.record_failure(row, error, retry_in=retry_in, park=park)
        if not park:
            due = time.monotonic() + retry_in
            self._retry_due = due if self._retry_due is None else min(self._retry_due, due)
        OUTBOX_REFUSED.labels("parked" if park else "retry").inc()
        (log.error if park else log.warning)(
            "outbox.row_parked" if park else "outbox.row_refused",
            outbox_id=row.id,
            event_id=row.event_id,
            subject=row.subject,
            size_bytes=len(row.body),
            attempt=attempt,
            max_attempts=self._max_attempts,
            error=error,
            **({} if park else {"retry_in": retry_in}),
        )

    async def purge_history(self) -> int:
        """Drop inbox claims past their retention (published outbox rows are gone already); returns how
        many."""
        async with self._pool.acquire() as conn:
            inbox = await Inbox(conn).purge(self._inbox_retention_days)
        if inbox:
            log.info("outbox.purged", inbox_rows=inbox)
        return inbox

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            if not self.leading:
                self._task.cancel()  # it waits for the lock, in PostgreSQL: asyncpg cancels the request
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._step_down("stopping")  # a waiting relay leads now
        await self._release_listen_conn()


def refuses_the_row(exc: Exception) -> bool:
    """The broker answered, and its answer is about this message: larger than the max payload (checked by
    the client against the server's limit), or refused by the stream with a 4xx (e.g. over its maximum
    message size). Anything else (timeouts, closed connections, no responders, 5xx) is the broker being
    unreachable or unwell, which says nothing about the row."""
    if isinstance(exc, MaxPayloadError | ValueError | TypeError):
        return True
    code = exc.code if isinstance(exc, APIError) else None
    return code is not None and 400 <= code < 500


def pass_settings(hold_rows_seconds: float) -> str:
    """The SET LOCALs of a pass's transaction. The claim walks the primary key in id order and stops at
    its LIMIT; left to itself the planner, whose estimate of the table is rarely fresh, took a bitmap
    scan (every entry of the index, every waiting row and every one published since the last VACUUM,
    whose index entries a bitmap scan never marks dead, and their heap pages, then a sort of all the
    waiting rows: 0.54 ms instead of 0.13 ms with 900 waiting and 3,000 published; with nothing waiting,
    250 us instead of 25 us of PostgreSQL's CPU) or, taking the table for nearly empty, a sequential scan
    of it and a sort, on every pass."""
    return (
        f"SET LOCAL idle_in_transaction_session_timeout = '{hold_rows_seconds * 1000:.0f}'; "
        "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"
    )


@contextlib.asynccontextmanager
async def _hold_rows_transaction(
    conn: asyncpg.pool.PoolConnectionProxy, seconds: float
) -> AsyncIterator[None]:
    """A transaction whose session PostgreSQL ends after `seconds` idle in it. The claimed rows stay locked
    while the relay publishes: if this process stalls meanwhile (its event loop blocked, a publish
    hanging), the rows are free again for whoever leads next. BEGIN and the SET LOCALs go as one simple
    query (one round trip, where `conn.transaction()` and a SET LOCAL of its own were two)."""
    await conn.execute(f"BEGIN; {pass_settings(seconds)}")
    try:
        yield
    except BaseException:
        if still_open(conn):
            with contextlib.suppress(Exception):  # broken meanwhile: the session's end rolls back
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _first(*waits: Awaitable[object]) -> None:
    """Until the first of `waits` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
