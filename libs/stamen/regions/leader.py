"""Which PostgreSQL node is the primary: one record in a JetStream key-value bucket.

The bucket is replicated like the lifecycle streams (R3 across regions on a cluster), so it survives
the loss of one region and every change goes through JetStream's Raft log: this is the consensus store
(the role etcd plays for Patroni). Promotion takes the record over with a compare-and-set on its
revision, so two coordinators cannot both promote; a node that starts consults it first and never
comes up as a primary unless the record names it (its fencing token). The term grows with each
change, and the bucket keeps the last records as the history of who led when.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, Placement, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

BUCKET = "stamen_db_leader"
KEY = "primary"


@dataclass(frozen=True)
class Leader:
    node: str  # the region whose PostgreSQL node is (to be) the primary
    host: str
    port: int
    term: int
    since: str  # ISO time it became leader
    reason: str = ""

    def successor(self, node: str, host: str, port: int, reason: str) -> Leader:
        return Leader(node, host, port, self.term + 1, datetime.now(UTC).isoformat(), reason)


@dataclass(frozen=True)
class LeaderEntry:
    leader: Leader
    revision: int


class LeaderStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, replicas: int = 1, placement_tags: Sequence[str] = ()
    ) -> LeaderStore:
        """The bucket, created on first use with the lifecycle streams' replicas and placement."""
        try:
            kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=BUCKET,
                    history=16,
                    replicas=replicas,
                    storage=StorageType.FILE,
                    placement=Placement(tags=list(placement_tags)) if placement_tags else None,
                )
            )
        return cls(kv)

    async def get(self) -> LeaderEntry | None:
        try:
            entry = await self._kv.get(KEY)
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return LeaderEntry(Leader(**json.loads(entry.value)), entry.revision)

    async def bootstrap(self, leader: Leader) -> LeaderEntry:
        """Record the first primary; if one is recorded already, that one stands."""
        try:
            revision = await self._kv.create(KEY, _encode(leader))
        except KeyWrongLastSequenceError:
            current = await self.get()
            assert current is not None
            return current
        return LeaderEntry(leader, revision)

    async def take_over(self, new: Leader, expected_revision: int) -> LeaderEntry | None:
        """Compare-and-set: `new` becomes the record only if nobody changed it since `expected_revision`."""
        try:
            revision = await self._kv.update(KEY, _encode(new), last=expected_revision)
        except KeyWrongLastSequenceError:
            return None
        return LeaderEntry(new, revision)


def _encode(leader: Leader) -> bytes:
    return json.dumps(asdict(leader)).encode()
