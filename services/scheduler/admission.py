"""Admission: take the next queued workset that every limit allows, place it, hold its slot."""

from __future__ import annotations

import asyncpg
import structlog

from services.scheduler.dispatch import Dispatcher
from stamen.domain.admission import (
    Limits,
    Placement,
    next_head,
    next_queues,
    place,
    room_after,
)
from stamen.domain.lifecycle import WorksetState
from stamen.events.types import WorksetScheduled
from stamen.settings import Settings
from stamen.store.dispatch_facts import facts_on, queue_head_and_workset, workset_and_facts
from stamen.store.slots import SlotLedger
from stamen.store.unit_of_work import UnitOfWork

log = structlog.get_logger(__name__)


class Admitter:
    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, holder: str, dispatcher: Dispatcher | None = None
    ) -> None:
        """`dispatcher`: records the admitted workset's first step in the admission's transaction and
        submits it (without it, the dispatcher's next pass does)."""
        self._dispatcher = dispatcher
        self._pool = pool
        self._settings = settings
        self._holder = holder
        self._room_left = True  # after the last admission: a free slot may remain

    @property
    def dispatches(self) -> bool:
        """Whether an admission also records and submits the workset's first step."""
        return self._dispatcher is not None

    @property
    def global_max(self) -> int:
        return self._settings.max_concurrent_worksets

    async def admit_all(self) -> list[Placement]:
        """Admit until nothing more may start; stops without asking again once the last admission
        took the last free slot (globally or on every active cluster)."""
        admitted = []
        while (placement := await self.admit_next()) is not None:
            admitted.append(placement)
            if not self._room_left:
                break
        return admitted

    async def admit_next(self) -> Placement | None:
        async with self._pool.acquire() as conn:
            async with UnitOfWork.on(conn) as uow:
                repo = uow.slots
                await repo.lock_admission()
                # One statement: the slots held, and the queues waiting with what fair share orders them
                # by (a few small rows each, kept by triggers; migration 0021).
                # With a slot free, what placement scores against rides along (the clusters and the regions).
                waiting = await repo.waiting_queues(self._settings.max_concurrent_worksets, placement=True)
                occupancy = waiting.occupancy
                if occupancy.total >= self._settings.max_concurrent_worksets:
                    return None  # every slot taken (the queues were not read)
                limits = Limits(
                    global_max=self._settings.max_concurrent_worksets,
                    tenant_max=waiting.quotas,
                    default_tenant_max=self._settings.default_tenant_max_concurrent,
                )
                front = next_queues(waiting.queues, occupancy, limits, waiting.last_admitted)
                if not front:
                    return None
                # The heads of the queues in front only (usually one index descent); where a workset goes
                # never changes which head is next, so only the head taken needs its placement facts:
                # read with the head when one queue is in front, after the choice when tenants tie. With one
                # queue in front and a dispatcher, the head's workset is read and locked by that statement too,
                # with what the dispatcher reads before it records the first step.
                taken = None
                if len(front) == 1 and self._dispatcher is not None:
                    taken = await queue_head_and_workset(uow.worksets, front[0])
                    heads = [taken[0]] if taken is not None else []
                else:
                    heads = await repo.queue_heads(front, facts=len(front) == 1)
                head = next_head(heads, occupancy, limits, waiting.last_admitted)
                if head is None:
                    return None
                if len(front) > 1:
                    head = await repo.head_facts(head)
                # Read every pass: the regions service owns region_health; a region without a row is healthy.
                assert waiting.placement is not None  # a slot is free
                views, health, latency = (
                    waiting.placement.clusters,
                    waiting.placement.health,
                    waiting.placement.latency,
                )
                clusters = waiting.placement.records
                placement = place(head, views, health, latency)
                if placement is None:
                    return None
                self._room_left = room_after(placement, views, occupancy, limits)
                facts = None
                if self._dispatcher is None:
                    ws = await uow.worksets.get(placement.workset_id, for_update=True)
                elif taken is not None:
                    ws, facts = (
                        taken[1],
                        facts_on(taken[2], taken[1], placement.cluster, clusters.get(placement.cluster)),
                    )
                else:  # with what the dispatcher reads before it records the first step: one statement
                    ws, facts = await workset_and_facts(
                        uow.worksets, placement.workset_id, placement.cluster, clusters.get(placement.cluster)
                    )
                if ws.attempt == 0:  # first admission: the spec's limits, else the deployment's defaults
                    ws.max_retries = int(ws.spec.get("max_retries", self._settings.default_max_retries))
                    duration = ws.spec.get(
                        "max_duration_seconds", self._settings.default_max_duration_seconds
                    )
                    ws.max_duration_seconds = ws.max_duration_seconds or (int(duration) if duration else None)
                ws.attempt += 1
                ws.cluster = placement.cluster
                ws.placement_reason = placement.reason
                ws.placement_scores = placement.scores
                ws.transition(
                    WorksetState.SCHEDULED,
                    actor=self._holder,
                    reason=f"placed on {placement.cluster}: {placement.reason}",
                    event=WorksetScheduled(
                        cluster=placement.cluster, reason=placement.reason, scores=placement.scores
                    ),
                )
                # The lease (and the run it starts) written by the workset's save: one statement.
                lease = SlotLedger.leasing(
                    workset_id=ws.id,
                    tenant_id=ws.tenant_id,
                    cluster=placement.cluster,
                    holder=self._holder,
                    attempt=ws.attempt,
                )
                submission = None
                if self._dispatcher is None:
                    await uow.worksets.save(ws, lease)
                else:
                    # Its first step is recorded for submission in the same transaction, as the dispatcher's
                    # claim would do next (one transaction fewer per attempt), by the same save.
                    submission = await self._dispatcher.prepare(
                        uow, ws, changed=True, along=[lease], facts=facts
                    )
                await uow.commit()
            log.info("scheduler.admitted", workset_id=ws.id, cluster=placement.cluster, attempt=ws.attempt)
            if submission is not None and self._dispatcher is not None:
                await self._dispatcher.submit_holding(conn, submission)
        return placement
