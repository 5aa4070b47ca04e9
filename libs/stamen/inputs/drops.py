"""S3 drop intake: Daylily workset folders with a daylily.ready sentinel become worksets.

`DropIntake.consider` handles one folder (used by the polling `DropWatcher` and by the portal's S3
event endpoint); `ready_folders_in_event` reads S3 event notifications. Idempotent three ways: the
s3_drops table remembers each daylily.ready ETag handled, the daylily.in_progress written on pick-up is
newer than the ready sentinel, and the workset's idempotency key is the folder URI + ready ETag.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

import asyncpg
import structlog

from stamen.errors import CodedError
from stamen.events.envelope import Envelope
from stamen.inputs import sentinels
from stamen.inputs.folders import folder_name, import_documents, read_s3_folder
from stamen.inputs.objects import ObjectInfo, ObjectStore, StorageError, gather_bounded
from stamen.inputs.repository import DropRecord, IntakeRepository, RecordedDropOutcome
from stamen.inputs.settings import IntakeSettings
from stamen.intake import IdempotencyKeyReused, submit_workset
from stamen.tenancy import S3Location, access_findings, refusal, tenant_buckets
from stamen.worksets.findings import has_errors
from stamen.worksets.rules import traverses

if TYPE_CHECKING:
    from stamen.bus.announce import Announce

log = structlog.get_logger(__name__)
ACTOR = "s3-drop"

Action = RecordedDropOutcome | Literal["skipped"]


@dataclass(frozen=True)
class DropOutcome:
    bucket: str
    folder: str
    action: Action
    reason: str
    workset_id: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "folder": self.folder,
            "action": self.action,
            "reason": self.reason,
            "workset_id": self.workset_id,
            "findings": self.findings,
        }


class DropIntake:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        *,
        region: str,
        intake: IntakeSettings,
        announce: Announce | None = None,
    ) -> None:
        """`announce`: publishes a picked-up folder's workset.submitted once the pick-up is recorded, as the
        HTTP API does (stamen.bus.announce), so the validator need not wait for the outbox relay."""
        self._pool = pool
        self._announce = announce
        self._store = store
        self._region = region
        self._intake = intake
        self.buckets = intake.watched_buckets()
        self.prefix = intake.normalised_drop_prefix()

    async def consider(self, bucket: str, folder: str, seen: set[str] | None = None) -> DropOutcome:
        """Pick the folder up if its sentinels say so; never raises for what is in the folder."""
        if traverses(folder_name(folder)):
            return DropOutcome(bucket, folder, "skipped", "the folder's name holds '..' or a path separator")
        try:
            objects = await self._store.list_objects(bucket, folder + sentinels.PREFIX)
            found = {obj.key[len(folder) :]: obj for obj in objects}
            if seen is None:
                async with self._pool.acquire() as conn:
                    seen = (await IntakeRepository(conn).seen_ready_etags(bucket, folder)).get(folder, set())
            decision = sentinels.decide(found, seen)
            if not decision.pick_up or decision.ready is None:
                return DropOutcome(bucket, folder, "skipped", decision.reason)
            return await self._pick_up(bucket, folder, decision.ready)
        except StorageError as exc:
            # Unreachable or no access: nothing recorded, so the next pass tries again.
            log.warning("drop.storage_error", bucket=bucket, folder=folder, error=str(exc))
            return DropOutcome(bucket, folder, "skipped", f"storage: {exc}")

    async def _pick_up(self, bucket: str, folder: str, ready: ObjectInfo) -> DropOutcome:
        docs = await read_s3_folder(self._store, bucket, folder)
        tenant = self._intake.drop_tenant(bucket, docs.info)
        imported = import_documents(docs, tenant=tenant, default_name=folder_name(folder))
        now = datetime.now(UTC)
        uri = f"s3://{bucket}/{folder}"
        found = list(imported.findings)
        if imported.spec is not None:
            # The folder itself (stamen writes its sentinels there) and every location the spec names must
            # be in buckets the tenant may use: a customer_id in daylily_info.yaml claims nothing more.
            rights = await tenant_buckets(self._pool, tenant)
            folder_refused = refusal(rights, S3Location("", uri, "write"), code="S3-ACCESS-003")
            found += [*([folder_refused] if folder_refused else []), *access_findings(imported.spec, rights)]
        if imported.spec is None or has_errors(found):
            # Nothing to store as a workset: the folder's own error sentinel and the s3_drops row say why.
            findings = [f.model_dump() for f in found]
            message = "refused: " + sentinels.summarise_findings(findings)
            await self._store.put(bucket, folder + sentinels.ERROR, sentinels.error_body(now, message))
            await self._record(bucket, folder, ready, tenant, None, "refused", findings, sentinels.ERROR)
            log.info("drop.refused", folder=uri, codes=[f["code"] for f in findings][:10])
            return DropOutcome(bucket, folder, "refused", message, findings=findings)
        spec = imported.spec
        # The announcement waits for the pick-up's own writes (daylily.in_progress, the s3_drops row): the
        # validator's sentinels find the folder by that row, and a rejection's daylily.error must be newer
        # than daylily.in_progress.
        submitted: list[Envelope] = []

        async def keep(events: Sequence[Envelope]) -> None:
            submitted.extend(events)

        try:
            result = await submit_workset(
                self._pool, tenant_id=tenant, name=spec.name, spec=spec.model_dump(mode="json", exclude_none=True),
                region=self._region, source="s3", actor=ACTOR, priority=spec.priority,
                idempotency_key=f"{uri}#{ready.etag.strip(chr(34))}", announce=keep,
            )  # fmt: skip
        except IdempotencyKeyReused as exc:
            # The files changed under the same daylily.ready: its workset exists; a new daylily.ready resubmits.
            log.warning("drop.changed_under_same_ready", folder=uri, workset_id=exc.workset_id)
            return DropOutcome(
                bucket,
                folder,
                "skipped",
                f"already picked up as {exc.workset_id}; the files "
                "changed since: write daylily.ready again to submit them",
                exc.workset_id,
            )
        await self._store.put(bucket, folder + sentinels.IN_PROGRESS, sentinels.timestamp_body(now))
        warnings = [f.model_dump() for f in imported.findings]
        await self._record(
            bucket, folder, ready, tenant, result.workset_id, "submitted", warnings, sentinels.IN_PROGRESS
        )
        if self._announce is not None and submitted:
            await self._announce(submitted)
        log.info("drop.submitted", folder=uri, workset_id=result.workset_id, created=result.created)
        return DropOutcome(bucket, folder, "submitted", "picked up", result.workset_id, warnings)

    async def _record(
        self,
        bucket: str,
        folder: str,
        ready: ObjectInfo,
        tenant: str,
        workset_id: str | None,
        outcome: RecordedDropOutcome,
        findings: list[dict[str, Any]],
        sentinel: str,
    ) -> None:
        async with self._pool.acquire() as conn:
            await IntakeRepository(conn).record_drop(
                DropRecord(
                    bucket=bucket,
                    folder=folder,
                    ready_etag=ready.etag,
                    ready_modified=ready.last_modified,
                    tenant_id=tenant,
                    workset_id=workset_id,
                    outcome=outcome,
                    sentinel=sentinel,
                    findings=findings,
                )
            )


class DropWatcher:
    """Polls the watched buckets: one listing of the workset folders (Delimiter='/'), then only the
    daylily.* sentinel keys of folders not picked up yet; folders already handled are re-listed every
    `drop_rescan_every` passes to notice a new daylily.ready."""

    def __init__(
        self, intake: DropIntake, store: ObjectStore, pool: asyncpg.Pool, settings: IntakeSettings
    ) -> None:
        self._intake = intake
        self._store = store
        self._pool = pool
        self._settings = settings
        self._passes = 0

    async def scan_once(self) -> list[DropOutcome]:
        self._passes += 1
        rescan = self._passes % self._settings.drop_rescan_every == 1 or self._settings.drop_rescan_every == 1
        limit = asyncio.Semaphore(self._settings.storage_concurrency)
        outcomes: list[DropOutcome] = []
        for bucket in self._intake.buckets:
            try:
                folders = await self._store.list_folders(bucket, self._intake.prefix)
            except StorageError as exc:
                log.warning("drop.list_failed", bucket=bucket, error=str(exc))
                continue
            async with self._pool.acquire() as conn:
                seen = await IntakeRepository(conn).seen_ready_etags(bucket)
            due = [f for f in folders if rescan or f not in seen]
            outcomes += await gather_bounded(
                limit, *(self._intake.consider(bucket, f, seen.get(f, set())) for f in due)
            )
        return outcomes

    async def run(self) -> None:
        """Until cancelled; one bad pass is logged and the next one runs on time."""
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("drop.pass_failed")
            await asyncio.sleep(self._settings.drop_poll_seconds)


class S3EventInvalid(CodedError, ValueError):
    code = "S3_EVENT_INVALID"


def _records(body: object) -> list[Mapping[str, Any]]:
    if not isinstance(body, Mapping):
        raise S3EventInvalid("the body must be a JSON object")
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        try:  # delivered through SNS: the S3 event is the message text
            return _records(json.loads(body["Message"]))
        except json.JSONDecodeError:
            raise S3EventInvalid("the SNS Message is not JSON") from None
    if body.get("Event") == "s3:TestEvent":
        return []
    records = body.get("Records")
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise S3EventInvalid("no Records list: expected an S3 event notification")
    return records


def ready_folders_in_event(body: object, prefix: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(bucket, folder) of every daylily.ready created in an S3 event, and what was ignored and why."""
    folders: list[tuple[str, str]] = []
    ignored: list[str] = []
    for record in _records(body):
        try:
            name = str(record.get("eventName", ""))
            bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))  # event keys are URL-encoded
        except (KeyError, TypeError):
            raise S3EventInvalid("a record lacks s3.bucket.name or s3.object.key") from None
        folder, _, leaf = key.rpartition("/")
        rest = folder[len(prefix) :] if folder.startswith(prefix) else ""
        if not name.startswith("ObjectCreated"):
            ignored.append(f"s3://{bucket}/{key}: {name or 'no eventName'} is not an object creation")
        elif leaf != sentinels.READY or not rest or traverses(rest):
            ignored.append(
                f"s3://{bucket}/{key}: not a {prefix}<workset>/{sentinels.READY} key (a workset "
                "folder name without '/' or '..')"
            )
        elif (bucket, folder + "/") not in folders:
            folders.append((bucket, folder + "/"))
    return folders, ignored
