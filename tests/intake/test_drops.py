"""The S3 drop watcher against moto and PostgreSQL: one workset per folder however often it is seen,
sentinels kept true, the watcher's loop picks a folder up within 5 s."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from stamen.inputs import sentinels
from stamen.inputs.drops import DropIntake, DropWatcher, S3EventInvalid, ready_folders_in_event
from stamen.inputs.objects import ObjectInfo, ObjectStore, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings
from stamen.store.unit_of_work import UnitOfWork
from stamen.worksets.limits import MAX_DOCUMENT_BYTES
from tests.intake.s3kit import DROP_PREFIX, S3Lab, grant, make_intake


async def worksets(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT id, tenant_id, name, state, idempotency_key FROM worksets"))


def settings_for(s3lab: S3Lab) -> Settings:
    return Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2", region="us-west-2")


async def test_same_folder_seen_again_and_again_makes_one_workset(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    folder = s3lab.drop_folder("run7")
    s3lab.drop_folder("not-ready-yet", ready=False)
    intake = make_intake(s3lab)
    await grant(pool, "acme", s3lab.bucket)  # the drop bucket is acme's
    async with open_object_store(settings_for(s3lab), intake) as store:
        drops = DropIntake(pool, store, region="us-west-2", intake=intake)
        first = await DropWatcher(drops, store, pool, intake).scan_once()
        assert sorted((o.folder.rsplit("/", 2)[1], o.action) for o in first) == [
            ("not-ready-yet", "skipped"),
            ("run7", "submitted"),
        ]
        # Seen again: by the same watcher, by a restarted one, and through the S3 event path.
        again = await DropWatcher(drops, store, pool, intake).scan_once()
        assert {o.action for o in again} == {"skipped"}
        assert (await drops.consider(s3lab.bucket, folder)).action == "skipped"
    rows = await worksets(pool)
    assert len(rows) == 1 and rows[0]["tenant_id"] == "acme" and rows[0]["name"] == "run7"
    assert rows[0]["idempotency_key"].startswith(f"s3://{s3lab.bucket}/{folder}#")
    stamp = s3lab.get(folder + sentinels.IN_PROGRESS).decode()
    assert abs(datetime.fromisoformat(stamp) - datetime.now(UTC)) < timedelta(seconds=30)


async def test_lost_memory_still_makes_one_workset(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    """Even if the s3_drops rows and the in_progress sentinel were lost, the idempotency key holds."""
    folder = s3lab.drop_folder("run8")
    intake = make_intake(s3lab)
    await grant(pool, "acme", s3lab.bucket)  # the drop bucket is acme's
    async with open_object_store(settings_for(s3lab), intake) as store:
        drops = DropIntake(pool, store, region="us-west-2", intake=intake)
        assert (await drops.consider(s3lab.bucket, folder)).action == "submitted"
        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM s3_drops")
        s3lab.client.delete_object(Bucket=s3lab.bucket, Key=folder + sentinels.IN_PROGRESS)
        again = await drops.consider(s3lab.bucket, folder)
    assert again.action == "submitted"
    assert len(await worksets(pool)) == 1


TEN_MB = 10 * 1024 * 1024


# daylily_work.yaml -> the one finding code and its message
@pytest.mark.parametrize(
    ("work", "code", "message"),
    [
        ("- a list\n- not a mapping\n", "VAL-INPUT-004", "the top level is a list, not a mapping"),
        (
            bytes(range(256)) * (TEN_MB // 256),
            "VAL-INPUT-002",
            f"daylily_work.yaml is {TEN_MB} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes",
        ),
        (b"dy-r: \xff\xfe broken\n", "VAL-INPUT-001", "input is not UTF-8 (byte 6 is invalid)"),
    ],
    ids=["not a mapping", "10 MB of garbage", "not UTF-8"],
)
async def test_a_folder_that_cannot_be_read_is_refused_with_daylily_error(
    pool: asyncpg.Pool, s3lab: S3Lab, work: str | bytes, code: str, message: str
) -> None:
    folder = s3lab.drop_folder("broken")
    s3lab.put(folder + "daylily_work.yaml", work)
    intake = make_intake(s3lab)
    await grant(pool, "acme", s3lab.bucket)  # the drop bucket is acme's
    async with open_object_store(settings_for(s3lab), intake) as store:
        outcome = await DropIntake(pool, store, region="us-west-2", intake=intake).consider(
            s3lab.bucket, folder
        )
    assert outcome.action == "refused"
    assert [(f["code"], f["message"], f["source"]) for f in outcome.findings] == [
        (code, message, "daylily_work.yaml")
    ]
    stamp, written = s3lab.get(folder + sentinels.ERROR).decode().split("\t")
    datetime.fromisoformat(stamp)
    assert written == f"refused: {code} -: {message}"
    assert await worksets(pool) == []
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT outcome, sentinel, findings FROM s3_drops")
    assert (row["outcome"], row["sentinel"]) == ("refused", sentinels.ERROR)


async def test_the_watcher_loop_picks_a_new_folder_up_within_5_seconds(
    pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    intake = make_intake(s3lab, drop_poll_seconds=2.0)
    await grant(pool, "acme", s3lab.bucket)  # the drop bucket is acme's
    async with open_object_store(settings_for(s3lab), intake) as store:
        watcher = DropWatcher(DropIntake(pool, store, region="us-west-2", intake=intake), store, pool, intake)
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.sleep(0.3)  # the watcher is between passes
            folder = s3lab.drop_folder("late")
            started = time.monotonic()
            # Picked up = the workset exists and daylily.in_progress is written (the pick-up's last step).
            while not (await worksets(pool) and s3lab.exists(folder + sentinels.IN_PROGRESS)):
                assert time.monotonic() - started < 5, "not picked up within 5 s"
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
    async with UnitOfWork(pool) as uow:
        [row] = await worksets(pool)
        history = await uow.worksets.history(row["id"])
    assert [h.to_state for h in history] == ["submitted"] and history[0].actor == "s3-drop"


class CountingStore:
    """The real S3 store, recording every call as (operation, key or prefix)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        self.calls.append(("head", key))
        return await self.inner.head(bucket, key)

    async def read(self, bucket: str, key: str, *, length: int | None = None, offset: int = 0) -> bytes:
        self.calls.append(("read", key))
        return await self.inner.read(bucket, key, length=length, offset=offset)

    async def read_start(self, bucket: str, key: str, length: int) -> tuple[ObjectInfo, bytes]:
        self.calls.append(("read_start", key))
        return await self.inner.read_start(bucket, key, length)

    async def put(self, bucket: str, key: str, body: bytes, *, content_type: str = "text/plain") -> None:
        self.calls.append(("put", key))
        await self.inner.put(bucket, key, body, content_type=content_type)

    async def list_folders(self, bucket: str, prefix: str) -> list[str]:
        self.calls.append(("list_folders", prefix))
        return await self.inner.list_folders(bucket, prefix)

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        self.calls.append(("list_objects", prefix))
        return await self.inner.list_objects(bucket, prefix)

    async def bucket_region(self, bucket: str) -> str | None:
        self.calls.append(("bucket_region", bucket))
        return await self.inner.bucket_region(bucket)

    async def ensure_bucket(self, bucket: str) -> None:
        self.calls.append(("ensure_bucket", bucket))
        await self.inner.ensure_bucket(bucket)


async def test_the_watcher_lists_efficiently(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    """A pass that is not a rescan: one folder listing, then only the sentinels of folders not picked up
    yet; nothing at all for folders already handled. Every Nth pass re-lists their sentinels only."""
    done_a, done_b = s3lab.drop_folder("eff-a"), s3lab.drop_folder("eff-b")
    waiting = s3lab.drop_folder("eff-wait", ready=False)
    intake = make_intake(s3lab, drop_rescan_every=3)
    await grant(pool, "acme", s3lab.bucket)  # the drop bucket is acme's
    async with open_object_store(settings_for(s3lab), intake) as real:
        store = CountingStore(real)
        watcher = DropWatcher(DropIntake(pool, store, region="us-west-2", intake=intake), store, pool, intake)
        first = await watcher.scan_once()  # pass 1 is a rescan: everything is looked at, two picked up
        assert sorted(o.action for o in first) == ["skipped", "submitted", "submitted"]
        for _ in range(2):  # passes 2 and 3
            store.calls.clear()
            outcomes = await watcher.scan_once()
            assert store.calls == [("list_folders", DROP_PREFIX), ("list_objects", waiting + "daylily.")]
            assert [(o.folder, o.action) for o in outcomes] == [(waiting, "skipped")]
        store.calls.clear()
        await watcher.scan_once()  # pass 4: a rescan, to notice a daylily.ready written again
        assert sorted(store.calls) == sorted(
            [
                ("list_folders", DROP_PREFIX),
                *(("list_objects", folder + "daylily.") for folder in (done_a, done_b, waiting)),
            ]
        )
    assert len(await worksets(pool)) == 2


def info(name: str, seconds: int, etag: str = '"e"') -> ObjectInfo:
    return ObjectInfo(
        key=name,
        size=1,
        etag=etag,
        last_modified=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds),
    )


@pytest.mark.parametrize(
    ("present", "pick_up"),
    [
        ({sentinels.READY: 0}, True),
        ({}, False),
        ({sentinels.READY: 0, sentinels.IGNORE: 0}, False),
        ({sentinels.READY: 0, sentinels.LOCK: 5}, False),
        ({sentinels.READY: 0, sentinels.IN_PROGRESS: 1}, False),
        ({sentinels.READY: 0, sentinels.IN_PROGRESS: 0}, False),  # same second: handled
        ({sentinels.READY: 10, sentinels.ERROR: 1}, True),  # ready written again after an error
    ],
)
def test_sentinel_decision(present: dict[str, int], pick_up: bool) -> None:
    assert sentinels.decide({n: info(n, s) for n, s in present.items()}, set()).pick_up is pick_up


def test_a_ready_sentinel_already_handled_is_not_picked_up_again() -> None:
    assert not sentinels.decide({sentinels.READY: info(sentinels.READY, 0, '"abc"')}, {'"abc"'}).pick_up


def test_error_sentinel_is_timestamp_tab_one_line() -> None:
    body = sentinels.error_body(datetime(2025, 1, 2, tzinfo=UTC), "two\tlines\nhere")
    assert body == b"2025-01-02T00:00:00+00:00\ttwo lines here"


def test_s3_event_shapes() -> None:
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "lab"}, "object": {"key": f"{DROP_PREFIX}run+7%2B/daylily.ready"}},
    }
    other = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "lab"}, "object": {"key": f"{DROP_PREFIX}run7/stage_samples.tsv"}},
    }
    removed = {**record, "eventName": "ObjectRemoved:Delete"}
    folders, ignored = ready_folders_in_event({"Records": [record, record, other, removed]}, DROP_PREFIX)
    assert folders == [("lab", f"{DROP_PREFIX}run 7+/")] and len(ignored) == 2
    import json

    sns = {"Type": "Notification", "Message": json.dumps({"Records": [record]})}
    assert ready_folders_in_event(sns, DROP_PREFIX)[0] == folders
    assert ready_folders_in_event({"Service": "Amazon S3", "Event": "s3:TestEvent"}, DROP_PREFIX) == ([], [])
    bad: object
    for bad in ([], {"Records": "x"}, {"Records": [{"eventName": "ObjectCreated:Put"}]}):
        with pytest.raises(S3EventInvalid):
            ready_folders_in_event(bad, DROP_PREFIX)


def test_watched_buckets_setting() -> None:
    settings = IntakeSettings(drop_buckets=" lab-a=acme, lab-b ,")
    assert settings.watched_buckets() == {"lab-a": "acme", "lab-b": None}
    with pytest.raises(ValueError, match="tenant id"):
        IntakeSettings(drop_buckets="lab=Not A Tenant").watched_buckets()


def test_a_ready_sentinel_outside_its_workset_folder_is_ignored() -> None:
    prefix = "daylily_monitoring/active_worksets/"
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "lab-bucket"}, "object": {"key": key}},
            }
            for key in (
                prefix + "../daylily.ready",
                prefix + "a%2F..%2Fb/daylily.ready",
                prefix + "run7/daylily.ready",
            )
        ]
    }
    folders, ignored = ready_folders_in_event(event, prefix)
    assert folders == [("lab-bucket", prefix + "run7/")]
    assert len(ignored) == 2 and all("without '/' or '..'" in reason for reason in ignored)


async def test_a_folder_named_for_its_parent_is_not_picked_up(pool: asyncpg.Pool, s3lab: S3Lab) -> None:
    intake = make_intake(s3lab)
    async with open_object_store(settings_for(s3lab), intake) as store:
        drops = DropIntake(pool, store, region="us-west-2", intake=intake)
        outcome = await drops.consider(s3lab.bucket, DROP_PREFIX + "../")
    assert (outcome.action, outcome.reason) == ("skipped", "the folder's name holds '..' or a path separator")
    assert await worksets(pool) == []
