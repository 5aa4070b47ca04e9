"""The scheduler's survey: one statement at the start of each pass that says which of its parts have
anything to do, and reads what the job monitor polls.

A pass used to ask each question in a transaction of its own (worksets in a down region, queued work
with room for it, orphaned submissions, work to dispatch, overdue worksets, cancel requests, the
clusters and their running jobs): seven transactions a pass, most of them finding nothing, the largest
share of an idle or busy scheduler's database work. The parts still ask their own questions (and lock
what they change) when the survey says there is an answer; it only spares the ones that would find
nothing. Its answers are as of its snapshot: work that appears later in the pass is found by the next
one (the loop passes again at once after a pass that did anything)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from stamen.domain.steps import StepRunState
from stamen.executors.base import JobHandle
from stamen.store.clusters import ClusterRecord
from stamen.store.db import Connection
from stamen.store.step_runs import (
    CANCEL_REQUESTED_FROM,
    OVERDUE_FROM,
    STALE_SUBMITTING_FROM,
    STRANDED_FROM,
    UNDISPATCHED_FROM,
    StepRunRow,
)


@dataclass(frozen=True)
class SchedulerSurvey:
    admissible: bool  # something is queued and there is room: under the global limit, on an active cluster
    undispatched: int  # admitted worksets with no step submitting or running
    stale_submissions: bool  # a step has been 'submitting' longer than the grace period
    stranded: bool  # an admitted workset's region is down (and another can take it)
    stop_requested: bool  # a cancel to carry out, or a workset past its max duration
    # Anything queued, admitted (holding a slot) or being submitted: False when nothing can change
    # without an event (a workset queued, a region's health) or a timer, both of which wake the loop.
    in_flight: bool = True
    clusters: list[ClusterRecord] = field(default_factory=list)
    active: dict[str, list[StepRunRow]] = field(default_factory=dict)  # pending/running steps per cluster


# The pending/running steps (what the monitor polls) and, when there are any, the clusters: as JSON arrays
# riding on the questions' one row, each step [id, workset_id, attempt, step, step_index, cluster, state,
# handle, started_at, submitted_by], each cluster [name, region, executor, max_concurrent, price_factor,
# data_locations, status, config].
_ACTIVE_SQL = """WITH active AS MATERIALIZED (
        SELECT id, workset_id, attempt, step, step_index, cluster, state, handle, started_at, submitted_by
        FROM step_runs WHERE state IN ('pending', 'running'))"""
_ACTIVE_COLUMNS = """(SELECT json_agg(json_build_array(id, workset_id, attempt, step, step_index, cluster, state,
                                             handle, started_at, submitted_by) ORDER BY id) FROM active) AS active,
                  CASE WHEN EXISTS (SELECT 1 FROM active) THEN (
                      SELECT json_agg(json_build_array(name, region, executor, max_concurrent, price_factor,
                                                       data_locations, status, config) ORDER BY name)
                      FROM clusters) END AS clusters"""


async def survey(conn: Connection, *, global_max: int, submit_grace_seconds: float) -> SchedulerSurvey:
    """One statement: the questions at once, the running steps and their clusters (one round trip, one
    snapshot; it was a read-only transaction of four round trips). Whether anything is queued is asked of
    `admission_queues` (a row exactly while its queue has a workset, kept by triggers in the transactions that
    change the worksets: migration 0021), not of `worksets`: the planner, guessing that a good share of the
    table is queued, read it sequentially until it met a queued row, through every finished one before it
    (~25 ms of PostgreSQL per pass with 100,000 finished worksets)."""
    flags = await conn.fetchrow(
        f"""{_ACTIVE_SQL}
            SELECT
              EXISTS (SELECT 1 FROM admission_queues)
              AND (SELECT count(*) FROM slot_leases) < $2
              AND EXISTS (SELECT 1 FROM clusters c WHERE c.status = 'active'
                          AND c.max_concurrent > (SELECT count(*) FROM slot_leases l WHERE l.cluster = c.name))
                AS admissible,
              (SELECT count(*) {UNDISPATCHED_FROM}) AS undispatched,
              EXISTS (SELECT 1 {STALE_SUBMITTING_FROM}) AS stale_submissions,
              EXISTS (SELECT 1 {STRANDED_FROM}) AS stranded,
              EXISTS (SELECT 1 {CANCEL_REQUESTED_FROM}) OR EXISTS (SELECT 1 {OVERDUE_FROM}) AS stop_requested,
              EXISTS (SELECT 1 FROM admission_queues) OR EXISTS (SELECT 1 FROM slot_leases)
              OR EXISTS (SELECT 1 FROM step_runs WHERE state = 'submitting') AS in_flight,
              {_ACTIVE_COLUMNS}""",
        submit_grace_seconds,
        global_max,
    )
    assert flags is not None
    active: dict[str, list[StepRunRow]] = defaultdict(list)
    for r in json.loads(flags["active"] or "[]"):
        step_run_id, workset_id, attempt, step, step_index, cluster, state, handle, started_at, by = r
        active[cluster].append(
            StepRunRow(
                id=step_run_id,
                workset_id=workset_id,
                attempt=attempt,
                step=step,
                step_index=step_index,
                cluster=cluster,
                state=StepRunState(state),
                handle=JobHandle.model_validate(handle),
                started_at=datetime.fromisoformat(started_at),
                submitted_by=by,
            )
        )
    clusters = [
        ClusterRecord(name, region, executor, max_concurrent, price_factor, tuple(locations), status, config)
        for name, region, executor, max_concurrent, price_factor, locations, status, config in json.loads(
            flags["clusters"] or "[]"
        )
    ]
    return SchedulerSurvey(
        admissible=flags["admissible"],
        undispatched=flags["undispatched"],
        stale_submissions=flags["stale_submissions"],
        stranded=flags["stranded"],
        stop_requested=flags["stop_requested"],
        in_flight=flags["in_flight"] or bool(active),
        clusters=clusters,
        active=dict(active),
    )
