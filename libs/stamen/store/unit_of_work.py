"""One transaction: repository changes, the inbox claim and the outbox rows commit or vanish together."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from stamen.domain.workset import Workset
from stamen.events.envelope import Envelope
from stamen.store.actuals import ActualsRepository
from stamen.store.clusters import ClusterRepository
from stamen.store.db import Connection
from stamen.store.dead_letters import DeadLetterRepository
from stamen.store.diagnoses import DiagnosisRepository
from stamen.store.inbox import Inbox
from stamen.store.outbox import OutboxWriter
from stamen.store.regions import RegionRepository
from stamen.store.slots import SlotLedger
from stamen.store.step_runs import StepRunRepository
from stamen.store.timers import TimerRepository
from stamen.store.worksets import WorksetRepository


class UnitOfWork:
    def __init__(self, pool: asyncpg.Pool | None = None, *, connection: Connection | None = None) -> None:
        if (pool is None) == (connection is None):
            raise TypeError("UnitOfWork needs a pool, or a connection its caller holds (UnitOfWork.on)")
        self._pool = pool
        self._borrowed = connection
        self._conn: Connection | None = None
        self._acquired: PoolConnectionProxy | None = None  # from the pool, given back on exit
        self._tx: asyncpg.transaction.Transaction | None = None
        self._seen: list[Workset] = []
        self._extra_events: list[Envelope] = []
        self._done = False

    @classmethod
    def on(cls, conn: Connection) -> UnitOfWork:
        """A unit of work on a connection the caller holds (and keeps after it): for work that goes on
        in the same session, like a submission that holds its step run's session lock across two
        transactions."""
        return cls(connection=conn)

    @property
    def connection(self) -> Connection:
        assert self._conn is not None, "use `async with UnitOfWork(pool) as uow`"
        return self._conn

    async def __aenter__(self) -> Self:
        if self._borrowed is not None:
            self._conn = self._borrowed
        else:
            assert self._pool is not None
            self._acquired = await self._pool.acquire()
            self._conn = self._acquired
        self._tx = self._conn.transaction()
        await self._tx.start()
        conn = self.connection
        self._outbox = OutboxWriter(conn)
        self.worksets = WorksetRepository(conn, self._seen, self._outbox)
        self.inbox = Inbox(conn)
        self.diagnoses = DiagnosisRepository(conn)
        self.clusters = ClusterRepository(conn)
        self.slots = SlotLedger(conn)
        self.step_runs = StepRunRepository(conn)
        self.timers = TimerRepository(conn)
        self.dead_letters = DeadLetterRepository(conn)
        self.actuals = ActualsRepository(conn)
        self.regions = RegionRepository(conn)
        return self

    def publish(self, *events: Envelope) -> None:
        """Events not tied to a workset (e.g. customer.created) go out with this commit."""
        self._extra_events.extend(events)

    async def commit(self) -> None:
        assert self._tx is not None
        events: list[Envelope] = []
        for ws in self._seen:
            if ws.pending_transitions:
                raise RuntimeError(f"workset {ws.id} has unsaved transitions; call worksets.save() first")
            events.extend(ws.pending_events)
        events.extend(self._extra_events)
        await self._outbox.add(events)
        try:
            await self._tx.commit()
        except asyncpg.PostgresError:
            # Refused by PostgreSQL (a deferred constraint): the transaction is over, rolled back by the
            # server, so there is nothing to roll back on exit (asyncpg would refuse to, and its
            # "cannot rollback" would hide this error).
            self._done = True
            raise
        self._done = True
        for ws in self._seen:
            ws.pending_events.clear()
        self._extra_events.clear()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._done and self._tx is not None:
                await self._tx.rollback()
        finally:
            acquired, self._acquired, self._conn = self._acquired, None, None
            if acquired is not None and self._pool is not None:
                await self._pool.release(acquired)
