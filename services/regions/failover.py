"""The database failover coordinator: promotes a standby when the primary's region is lost, fences any
other node that acts as a primary, and keeps synchronous replication only while a standby can ack.

It runs after each probe round of the regions service (when STAMEN_REGION_DB_FAILOVER is on) and
decides from what the probes saw; the leader record in JetStream's key-value store
(`stamen.regions.leader`) says which node is the primary, and is changed by compare-and-set before
any promotion, so two coordinators never promote two nodes. PostgreSQL does the replication, the
promotion (`pg_promote()`) and, on the returning node, the rewind; this only decides when.

- Unplanned failover: the leader's region is down (hysteresis-confirmed) and its server does not
  answer: the reachable standby in a region that is not down, with the least lag, is promoted.
- Planned switchover (a forced failover of a region whose server still answers, or a fail-back with
  --database): the old primary is fenced first, the candidate waits until it has replayed everything,
  then it is promoted.
- Fencing: a node that is not the recorded leader but accepts writes (an old primary started by hand)
  gets default_transaction_read_only and its client sessions ended; clients with
  target_session_attrs=read-write then pass it by. Its node agent rejoins it as a standby (pg_rewind).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from services.regions.probes import within
from stamen.domain.regions import ProbeResult, RegionOperationKind, RegionOperationOutcome, RegionStatus
from stamen.regions.leader import Leader, LeaderEntry, LeaderStore
from stamen.store.regions import RegionOperationRow

log = structlog.get_logger(__name__)
CATCH_UP_SECONDS = 30.0


@dataclass(frozen=True)
class DatabaseNode:
    region: str
    host: str
    port: int
    dsn: str  # this node alone, whatever its role


@dataclass
class Operation:
    """An audit row to write: a database promotion, switchover, fencing or synchronous-mode change."""

    region: str
    kind: RegionOperationKind
    reason: str
    detail: dict[str, Any]
    outcome: RegionOperationOutcome = "done"
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: int | None = None  # an operator's requested switchover this settles


class DatabaseFailover:
    def __init__(
        self,
        nodes: Mapping[str, DatabaseNode],
        open_store: Callable[[], Awaitable[LeaderStore]],
        *,
        synchronous: bool,
        actor: str,
        timeout: float,
    ) -> None:
        self._nodes = dict(nodes)
        self._open_store = open_store
        self._store: LeaderStore | None = None
        self._synchronous = synchronous
        self._actor = actor
        self._timeout = timeout
        self._lag_bytes: dict[str, float] = {}  # each standby's lag, as its primary last reported it
        self._sync_state: dict[str, str] = {}

    async def leader(self) -> LeaderEntry | None:
        # Bounded: while the service's own NATS connection moves to another node (its node may be in the
        # lost region) a read would wait for the client's request timeout and hold up the round.
        if self._store is None:
            self._store = await within(self._open_store(), self._timeout)
        return await within(self._store.get(), self._timeout)

    async def after_round(
        self,
        statuses: Mapping[str, RegionStatus],
        postgres: Mapping[str, ProbeResult],
        forced: set[str],
        requests: Sequence[RegionOperationRow] = (),
    ) -> list[Operation]:
        ops: list[Operation] = []
        try:
            entry = await self.leader()
            if entry is None:
                entry = await self._bootstrap(postgres, ops)
                if entry is None:
                    return ops
            self._remember_lag(entry.leader.node, postgres)
            leader = entry.leader
            recorded = postgres.get(leader.node)
            if recorded is not None and recorded.ok and recorded.facts.get("role") == "standby":
                # The record names it but it was not promoted (a coordinator stopped in between): finish.
                await self._execute_promotion(self._nodes[leader.node])
                ops.append(Operation(leader.node, "database_promotion", "finishing a promotion the leader "
                                     "record already names", {"term": leader.term}))  # fmt: skip
            elif statuses.get(leader.node) is RegionStatus.DOWN:
                entry = await self._fail_over(entry, statuses, postgres, forced, ops) or entry
            for request in requests:
                entry = await self._requested_switchover(request, entry, statuses, postgres, ops) or entry
            await self._fence_others(entry.leader, postgres, ops)
            if self._synchronous:
                await self._keep_synchronous(entry.leader, postgres, ops)
        except Exception as exc:  # never end the probe loop; the next round decides again
            log.exception("regions.db_failover_error", error=str(exc))
        return ops

    # -- decisions -----------------------------------------------------------------------------

    async def _bootstrap(
        self, postgres: Mapping[str, ProbeResult], ops: list[Operation]
    ) -> LeaderEntry | None:
        primaries = [
            r
            for r, p in postgres.items()
            if p.ok and p.facts.get("role") == "primary" and not p.facts.get("read_only")
        ]
        if len(primaries) != 1:
            log.warning("regions.db_leader_unknown", writable_primaries=primaries)
            return None
        node = self._nodes[primaries[0]]
        assert self._store is not None
        entry = await within(
            self._store.bootstrap(
                Leader(
                    node.region, node.host, node.port, 1, datetime.now(UTC).isoformat(), "first primary seen"
                )
            ),
            self._timeout,
        )
        ops.append(Operation(node.region, "database_promotion", "leader record created for the running primary",
                             {"term": entry.leader.term, "node": entry.leader.node, "bootstrap": True}))  # fmt: skip
        return entry

    def _remember_lag(self, leader: str, postgres: Mapping[str, ProbeResult]) -> None:
        probe = postgres.get(leader)
        if probe is None or not probe.ok:
            return  # keep what the primary said last: it is what a promotion loses at most
        for standby in probe.facts.get("standbys") or []:
            self._lag_bytes[str(standby["name"])] = float(standby.get("lag_bytes") or 0.0)
            self._sync_state[str(standby["name"])] = str(standby.get("sync_state") or "")

    def _candidates(
        self, leader: str, statuses: Mapping[str, RegionStatus], postgres: Mapping[str, ProbeResult]
    ) -> list[str]:
        usable = [
            r
            for r, p in postgres.items()
            if r != leader and r in self._nodes and p.ok and p.facts.get("role") == "standby"
            and statuses.get(r) is not RegionStatus.DOWN
        ]  # fmt: skip
        # A synchronous standby has every acknowledged commit; then the least lag.
        return sorted(
            usable, key=lambda r: (self._sync_state.get(r) != "sync", self._lag_bytes.get(r, float("inf")), r)
        )

    async def _fail_over(
        self,
        entry: LeaderEntry,
        statuses: Mapping[str, RegionStatus],
        postgres: Mapping[str, ProbeResult],
        forced: set[str],
        ops: list[Operation],
    ) -> LeaderEntry | None:
        leader = entry.leader
        answers = bool(postgres.get(leader.node) and postgres[leader.node].ok)
        if answers and leader.node not in forced:
            return None  # down for another reason (NATS, say) while its database works: no promotion
        candidates = self._candidates(leader.node, statuses, postgres)
        if not candidates:
            log.error("regions.db_no_standby", leader=leader.node)
            return None
        why = (
            f"region {leader.node} was failed over by an operator" if leader.node in forced
            else f"region {leader.node} is down and its PostgreSQL does not answer"
        )  # fmt: skip
        return await self._promote(entry, candidates[0], why, planned=answers, ops=ops)

    async def _requested_switchover(
        self,
        request: RegionOperationRow,
        entry: LeaderEntry,
        statuses: Mapping[str, RegionStatus],
        postgres: Mapping[str, ProbeResult],
        ops: list[Operation],
    ) -> LeaderEntry | None:
        target = str(request.detail.get("to_region") or request.region)

        def settle(outcome: RegionOperationOutcome, result: str) -> Operation:
            return Operation(target, "database_switchover", request.reason, {"result": result}, outcome,
                             request_id=request.id)  # fmt: skip

        if target == entry.leader.node:
            ops.append(settle("done", f"{target} is already the primary"))
            return None
        if target not in self._candidates(entry.leader.node, statuses, postgres):
            ops.append(settle("failed", f"{target} is not a streaming standby in a region that is up; "
                                        f"see `stamen region show {target}`"))  # fmt: skip
            return None
        promoted = await self._promote(
            entry, target, f"requested by {request.actor}: {request.reason}", planned=True, ops=ops
        )
        ops.append(
            settle("done", f"{target} promoted")
            if promoted
            else settle("failed", "switchover did not complete")
        )
        return promoted

    async def _promote(
        self, entry: LeaderEntry, region: str, why: str, *, planned: bool, ops: list[Operation]
    ) -> LeaderEntry | None:
        old, node = entry.leader, self._nodes[region]
        started = time.monotonic()
        detail: dict[str, Any] = {"from": old.node, "to": region, "planned": planned,
                                  "lag_bytes_last_seen": self._lag_bytes.get(region)}  # fmt: skip
        if planned and old.node in self._nodes:
            # Stop writes on the old primary, then let the candidate replay all of them: nothing is lost.
            target_lsn = await self._fence(self._nodes[old.node])
            ops.append(
                Operation(old.node, "database_fencing", f"before switchover to {region}", {"lsn": target_lsn})
            )
            detail["caught_up"] = await self._catch_up(node, target_lsn)
        assert self._store is not None
        # If this times out after the change was made, the next round finds the record naming a standby
        # and finishes the promotion.
        taken = await within(
            self._store.take_over(old.successor(region, node.host, node.port, why), entry.revision),
            self._timeout,
        )
        if taken is None:
            log.warning("regions.db_leader_changed_meanwhile", candidate=region)
            return None
        await self._execute_promotion(node)
        detail.update(term=taken.leader.term, promote_seconds=round(time.monotonic() - started, 3))
        ops.append(Operation(region, "database_promotion", why, detail))
        log.warning("regions.db_promoted", **detail)
        return taken

    async def _execute_promotion(self, node: DatabaseNode) -> None:
        await self._execute(node, "SELECT pg_promote(true, 60)")
        # A fenced or synchronous setting copied from the old primary must not follow the new one.
        await self._execute(node, "ALTER SYSTEM RESET default_transaction_read_only")
        if self._synchronous:
            await self._execute(node, "ALTER SYSTEM SET synchronous_standby_names = ''")
        await self._execute(node, "SELECT pg_reload_conf()")

    async def _fence_others(
        self, leader: Leader, postgres: Mapping[str, ProbeResult], ops: list[Operation]
    ) -> None:
        fenced_now = {op.region for op in ops if op.kind == "database_fencing"}
        for region, probe in postgres.items():
            if region == leader.node or region not in self._nodes or not probe.ok or region in fenced_now:
                continue
            if probe.facts.get("role") == "primary" and not probe.facts.get("read_only"):
                lsn = await self._fence(self._nodes[region])
                ops.append(Operation(region, "database_fencing",
                                     f"accepts writes but the primary is {leader.node} (term {leader.term})",
                                     {"lsn": lsn, "leader": leader.node}))  # fmt: skip
                log.warning("regions.db_fenced", region=region, leader=leader.node)

    async def _keep_synchronous(
        self, leader: Leader, postgres: Mapping[str, ProbeResult], ops: list[Operation]
    ) -> None:
        probe = postgres.get(leader.node)
        if probe is None or not probe.ok or probe.facts.get("role") != "primary":
            return
        streaming = [s["name"] for s in probe.facts.get("standbys") or [] if s.get("state") == "streaming"]
        current = str(probe.facts.get("sync_names") or "")
        wanted = "*" if streaming else ""
        if current == wanted:
            return
        await self._execute(
            self._nodes[leader.node], f"ALTER SYSTEM SET synchronous_standby_names = '{wanted}'"
        )
        await self._execute(self._nodes[leader.node], "SELECT pg_reload_conf()")
        why = (f"standby {', '.join(streaming)} streams: commits wait for it (RPO 0)" if streaming
               else "no standby streams: commits no longer wait for one (asynchronous until one is back)")  # fmt: skip
        ops.append(Operation(leader.node, "database_sync", why, {"synchronous_standby_names": wanted}))

    # -- SQL on one node -----------------------------------------------------------------------

    async def _execute(self, node: DatabaseNode, sql: str) -> Any:
        conn = await asyncpg.connect(node.dsn, timeout=self._timeout)
        try:
            return await conn.fetchval(sql, timeout=90)
        finally:
            await conn.close()

    async def _fence(self, node: DatabaseNode) -> str | None:
        """No new writes on `node`: read-only by default, every client session ended. Returns its WAL
        position (what a standby must have replayed to have everything)."""
        try:
            await self._execute(node, "ALTER SYSTEM SET default_transaction_read_only = on")
            await self._execute(node, "SELECT pg_reload_conf()")
            await self._execute(
                node,
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()""",
            )
            lsn = await self._execute(node, "SELECT pg_current_wal_lsn()::text")
            return str(lsn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("regions.db_fence_failed", region=node.region, error=str(exc))
            return None

    async def _catch_up(self, node: DatabaseNode, lsn: str | None) -> bool:
        if lsn is None:
            return False
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            behind = await self._execute(node, f"SELECT pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())")
            if behind is not None and float(behind) <= 0:
                return True
            await asyncio.sleep(0.1)
        return False
