"""Exactly-once effects on at-least-once delivery: the inbox claim commits with the handler's changes.

A consumer's handler calls can share transactions (group commit, `GroupCommit`): the calls of one
service that arrive within a gathering window of the first one waiting (a few milliseconds; none in the
validator, whose every call someone waits on; longer where nobody waits on the outcome), or while the group
before them commits, run one after the other in one transaction, each in a SAVEPOINT of its own (the inbox
claim and the handler's changes; a group of one is a plain transaction, without it). A call that fails is rolled back to its savepoint and fails alone (its message
is redelivered, as before); the others commit. If the transaction itself fails (the commit, or the
connection), every call of the group fails: nothing of it was committed, so every message is
redelivered, and the inbox claims make those redeliveries of what did commit no-ops. Calls return, and
their messages are acked, only after the commit. Only work that talks to PostgreSQL alone belongs in a
group: a call that waits on another network (S3, a cluster) would hold the whole group's transaction.

A group holds every row lock its calls took until it commits, so two groups (two replicas) whose calls
lock shared rows (e.g. the admission_queues row of a tenant's queue, which a workset entering the queue
updates) in opposite orders deadlock: PostgreSQL ends one call after a second, and its message is
redelivered. Calls that lock shared rows say which (`lock_order`), and a group runs its calls in that
order, so every group takes shared rows in one order and no two wait on each other.

A consumer whose events often have nothing for it to do (the notifier: an event no channel hears of)
gives a `Screen`: one read that says, for a whole group's events at once, which have anything to do.
The others are acked with no inbox claim, no savepoint, nothing written: their handling would have had
no effect, so a redelivery simply asks again. The screen runs before the group's transaction (a read:
at READ COMMITTED it sees what it would see inside), so a group with nothing to do is that one
statement, and one with a single call left is a plain transaction. A screen that fails lets every call
run in full.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import structlog

from stamen.bus.consumer import Delivery, EventHandler
from stamen.events.envelope import Envelope
from stamen.service.poison import known_workset
from stamen.store.db import Connection
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)

T = TypeVar("T")
TransactionalHandler = Callable[[UnitOfWork, Envelope], Awaitable[None]]
# For each event, whether the handler has anything to do with it: a read (never a write), on the
# transaction's connection, before any claim.
Screen = Callable[[Connection, Sequence[Envelope]], Awaitable[Sequence[bool]]]
# Work for a group: it gets a unit of work whose commit releases its savepoint.
GroupWork = Callable[[UnitOfWork], Awaitable[T]]

# Calls gathered into one transaction at most: each runs after the one before it on the group's one
# connection, so this bounds how long a call waits for the others, and how long row locks are held.
MAX_GROUP = 32
# How long the first call of a quiet moment waits for others to join it. The relay publishes in batches
# and consumers fetch in batches, so most company arrives within a few milliseconds.
GATHER_SECONDS = 0.005


@dataclass(eq=False)
class _Call:
    work: GroupWork[Any]
    done: asyncio.Future[Any]
    arrived: float  # the event loop's clock
    lock_order: tuple[str, ...]  # the shared rows it locks, as a sort key; () first
    # The caller's log context (event id, consumer, ...): the work runs in the group's task.
    log_context: dict[str, Any] = field(default_factory=dict)
    screened: Screened | None = None


@dataclass(frozen=True)
class Screened:
    """A call's event and the screen that says whether it has anything to do: the group asks each screen
    once for all its calls' events (calls share a screen by identity)."""

    screen: Screen
    event: Envelope


class GroupCommit:
    """One service's (one pool's) gatherer of idempotent handler calls into shared transactions; one
    group's transaction runs at a time, and calls that arrive meanwhile make up the next group."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        *,
        max_group: int = MAX_GROUP,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, not {max_group}")
        self._pool = pool
        self._max_group = max_group
        self._gather_seconds = gather_seconds
        self._waiting: list[_Call] = []
        self._runner: asyncio.Task[None] | None = None
        self._full = asyncio.Event()  # set when a whole group waits: it need not wait out the window

    @property
    def gather_seconds(self) -> float:
        """How long the first call of a quiet moment waits for others to join its group."""
        return self._gather_seconds

    async def run(self, work: GroupWork[T], *, lock_order: tuple[str, ...] = ()) -> T:
        """`work`'s result once its group has committed; its own exception if it failed (its changes
        rolled back to its savepoint); the transaction's exception if the group's commit failed.
        `lock_order` names the shared rows `work` locks (see the module's docstring)."""
        result: T = await self._join(work, lock_order, None)
        return result

    async def run_screened(
        self, work: GroupWork[T], screened: Screened, *, lock_order: tuple[str, ...] = ()
    ) -> T | None:
        """As `run`; but None, with `work` not run, when the screen says its event has nothing to do."""
        result: T | None = await self._join(work, lock_order, screened)
        return result

    async def _join(self, work: GroupWork[T], lock_order: tuple[str, ...], screened: Screened | None) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(
            work,
            loop.create_future(),
            loop.time(),
            lock_order,
            structlog.contextvars.get_contextvars(),
            screened,
        )
        self._waiting.append(call)
        if len(self._waiting) >= self._max_group:
            self._full.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="group-commit")
        return await call.done

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                # A group starts when it is full, or when its oldest call has waited the gathering
                # window (those who came while the group before ran have waited part of it already).
                delay = self._waiting[0].arrived + self._gather_seconds - loop.time()
                if delay > 0 and len(self._waiting) < self._max_group:
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), delay)
                group, self._waiting = self._waiting[: self._max_group], self._waiting[self._max_group :]
                await self._commit([c for c in group if not c.done.done()])
        except BaseException as exc:  # cancelled (shutdown): no call is left waiting for a runner
            waiting, self._waiting = self._waiting, []
            for call in waiting:
                _fail(call, exc)
            raise

    async def _commit(self, group: list[_Call]) -> None:
        if not group:
            return
        if len(group) == 1 and group[0].screened is None:
            await self._commit_alone(group[0])
            return
        try:
            async with self._pool().acquire() as conn:
                # The screens first, before any transaction: a read, which sees what was committed before
                # it as it would inside the transaction (READ COMMITTED). Their idle calls are done; a
                # group that was only those is one statement, no BEGIN and COMMIT around it.
                idle = await _nothing_to_do(conn, group)
                for call in idle:
                    if not call.done.done():
                        call.done.set_result(None)
                busy = [c for c in group if c not in idle and not c.done.done()]
                if len(busy) == 1:
                    await self._commit_alone(busy[0], conn)
                elif busy:
                    await self._commit_together(busy, conn)
        except BaseException as exc:  # the connection: every call not done yet fails with it
            for call in group:
                _fail(call, exc)
            if not isinstance(exc, Exception):
                raise

    async def _commit_together(self, group: list[_Call], conn: Connection) -> None:
        """The group's calls in one transaction, each in a SAVEPOINT of its own."""
        results: list[tuple[_Call, Any]] = []
        try:
            async with conn.transaction():
                for call in sorted(group, key=lambda c: c.lock_order):  # stable: else as they arrived
                    if call.done.done():  # its caller gave up (cancelled) before its turn
                        continue
                    structlog.contextvars.clear_contextvars()
                    structlog.contextvars.bind_contextvars(**call.log_context)
                    try:
                        # Nested in the group's transaction, the unit of work is a SAVEPOINT: its commit
                        # releases it, an exception rolls back to it.
                        async with UnitOfWork.on(conn) as uow:
                            value = await call.work(uow)
                    except Exception as exc:
                        _fail(call, exc)
                    else:
                        results.append((call, value))
                    finally:
                        structlog.contextvars.clear_contextvars()
        except BaseException as exc:
            # Nothing of the group committed: every call not already failed on its own fails with it.
            for call in group:
                _fail(call, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, value in results:
            if not call.done.done():
                call.done.set_result(value)

    async def _commit_alone(self, call: _Call, conn: Connection | None = None) -> None:
        """A group of one is its own transaction, without the SAVEPOINT and RELEASE a group's calls need
        (two round trips of the few it makes): a call that fails, or whose commit fails, has only itself
        to roll back, which is what a group of one does anyway. On `conn` when the group already holds
        one (a screened group with one call left to run), else on a connection of its own."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**call.log_context)
        try:
            if conn is not None:
                async with UnitOfWork.on(conn) as uow:
                    value = await call.work(uow)
            else:
                async with self._pool().acquire() as own, UnitOfWork.on(own) as uow:
                    value = await call.work(uow)
        except BaseException as exc:
            _fail(call, exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            structlog.contextvars.clear_contextvars()
        if not call.done.done():
            call.done.set_result(value)


async def _nothing_to_do(conn: Connection, group: list[_Call]) -> set[_Call]:
    """The calls whose screen says their event has nothing to do: one read per screen for the group."""
    by_screen: dict[Screen, list[_Call]] = {}
    for call in group:
        if call.screened is not None and not call.done.done():
            by_screen.setdefault(call.screened.screen, []).append(call)
    idle: set[_Call] = set()
    for screen, calls in by_screen.items():
        try:
            wanted = await screen(conn, [c.screened.event for c in calls if c.screened is not None])
        except Exception as exc:  # each call runs in full, as without a screen
            log.warning("group_commit.screen_failed", error=f"{type(exc).__name__}: {exc}")
            continue
        idle.update(c for c, w in zip(calls, wanted, strict=True) if not w)
    return idle


def _fail(call: _Call, exc: BaseException) -> None:
    if call.done.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        call.done.cancel()
    else:
        call.done.set_exception(exc)


def idempotent(
    consumer: str,
    pool: Callable[[], asyncpg.Pool],
    handle: TransactionalHandler,
    *,
    group: GroupCommit | None = None,
    lock_order: tuple[str, ...] = (),
    screen: Screen | None = None,
) -> EventHandler:
    """Wrap `handle` so it runs in one transaction with the inbox claim; a redelivery is a no-op.
    With `group`, that transaction is shared with other calls (see GroupCommit): `handle` must then
    talk to PostgreSQL only, and name in `lock_order` the shared rows it locks.

    `screen`, when given, is asked first, before the transaction (for a whole group at once): an event
    it says has nothing to do is acked with no claim and nothing written. Its handling would have had no
    effect, so there is nothing to guard against a second one: a redelivery asks again. An event with
    an effect still goes through the claim, so every effect happens once."""

    async def claimed(uow: UnitOfWork, envelope: Envelope) -> bool:
        if not await uow.inbox.claim(consumer, envelope.id):
            return False
        async with known_workset(envelope):
            await handle(uow, envelope)
        await uow.commit()
        return True

    async def alone(envelope: Envelope) -> bool | None:
        async with pool().acquire() as conn:
            # The screen before the transaction, as a group's: nothing to do is one read.
            if screen is not None and not await _wanted_alone(screen, conn, envelope):
                return None
            async with UnitOfWork.on(conn) as uow:
                return await claimed(uow, envelope)

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        handled: bool | None
        if group is None:
            handled = await alone(envelope)
        elif screen is None:
            handled = await group.run(lambda uow: claimed(uow, envelope), lock_order=lock_order)
        else:
            handled = await group.run_screened(
                lambda uow: claimed(uow, envelope), Screened(screen, envelope), lock_order=lock_order
            )
        if handled is False:
            log.info("inbox.duplicate_skipped", delivery=delivery.num_delivered)

    return handler


async def _wanted_alone(screen: Screen, conn: Connection, envelope: Envelope) -> bool:
    try:
        return bool((await screen(conn, [envelope]))[0])
    except Exception as exc:  # handled in full, as without a screen
        log.warning("group_commit.screen_failed", error=f"{type(exc).__name__}: {exc}")
        return True


async def shared_read(group: GroupCommit | None, pool: Callable[[], asyncpg.Pool], work: GroupWork[T]) -> T:
    """`work` (no inbox claim: a read, or a write that needs none, such as the validator's `validating`) in a
    group's transaction when there is a group, else in one of its own; it commits what it wrote with
    `uow.commit()`."""
    if group is not None:
        return await group.run(work)
    async with UnitOfWork(pool()) as uow:
        return await work(uow)
