"""A submission's workset.submitted is published as soon as it has committed (stamen.bus.announce), before
the outbox relay has run; the relay's copy of the same row is dropped by JetStream as a duplicate, so the
stream holds the event once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
import yaml

from services.validator.intake_nats import IntakeResponder
from stamen.bus.announce import announcer
from stamen.bus.connections import BusConnection
from stamen.bus.subjects import EVENTS_STREAM, INTAKE_PREFIX, event_filter
from stamen.events.envelope import Envelope, decode_envelope
from stamen.inputs import sentinels
from stamen.inputs.drops import DropIntake
from stamen.inputs.objects import open_object_store
from stamen.intake import submit_workset
from stamen.relay import OutboxRelay
from stamen.settings import Settings
from tests.intake.s3kit import S3Lab, grant, make_intake


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[BusConnection]:
    connection = BusConnection(nats_url, name="announce-test", dedup_window_seconds=600)
    await connection.start(wait_seconds=30)
    try:
        yield connection
    finally:
        await connection.close()


async def test_a_submission_is_published_once_committed_and_the_relays_copy_is_a_duplicate(
    pool: asyncpg.Pool, bus: BusConnection
) -> None:
    submitted = await submit_workset(
        pool, tenant_id="acme", name="w", spec={"name": "w"}, region="us-west-2", source="api", actor="t",
        announce=announcer(bus),
    )  # fmt: skip
    # No relay has run: the row is still unpublished, yet the event is in the stream.
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    inbox = await bus.js.pull_subscribe(event_filter("workset.submitted"), stream=EVENTS_STREAM)
    [message] = await inbox.fetch(1, timeout=30)  # waits for it to arrive; not a speed bound
    event = decode_envelope(message.data)
    assert event.workset_id == submitted.workset_id and event.type == "workset.submitted"
    # The relay publishes the row as always; the server drops it (same Nats-Msg-Id): one copy.
    assert await OutboxRelay(pool, bus, poll_seconds=60).publish_pending() == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 1


async def test_without_nats_a_submission_commits_and_waits_for_nothing(pool: asyncpg.Pool) -> None:
    """NATS never reached: the announcement is skipped (the relay publishes the row once NATS is back)."""
    away = BusConnection("nats://127.0.0.1:1", name="announce-test", dedup_window_seconds=600)
    submitted = await submit_workset(
        pool, tenant_id="acme", name="w", spec={"name": "w"}, region="us-west-2", source="api", actor="t",
        announce=announcer(away),
    )  # fmt: skip
    assert submitted.created
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def _published_once_before_the_relay(pool: asyncpg.Pool, bus: BusConnection, workset_id: str) -> None:
    """The submission's row is still unpublished (no relay has run), yet its event is in the stream."""
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    inbox = await bus.js.pull_subscribe(event_filter("workset.submitted"), stream=EVENTS_STREAM)
    [message] = await inbox.fetch(1, timeout=30)  # waits for it to arrive; not a speed bound
    event = decode_envelope(message.data)
    assert event.workset_id == workset_id and event.type == "workset.submitted"


async def test_a_nats_submission_is_published_once_committed(
    pool: asyncpg.Pool, bus: BusConnection, s3lab: S3Lab
) -> None:
    """The NATS request/reply intake announces as the HTTP API does (the same `announce` of submit_workset)."""
    await grant(pool, "acme", s3lab.bucket)
    responder = IntakeResponder(
        bus.nc, pool, region="us-west-2", intake=make_intake(s3lab), announce=announcer(bus)
    )
    reply = await responder.reply_for(
        f"{INTAKE_PREFIX}.acme", yaml.safe_dump(s3lab.spec("lab-7")).encode(), content_type=None,
        idempotency_key=None,
    )  # fmt: skip
    assert reply["ok"], reply
    await _published_once_before_the_relay(pool, bus, str(reply["workset_id"]))


async def test_an_s3_drop_is_published_once_its_pick_up_is_recorded(
    pool: asyncpg.Pool, bus: BusConnection, s3lab: S3Lab
) -> None:
    """A dropped folder's workset.submitted goes out ahead of the relay, but only after the pick-up's own
    writes: the validator's sentinels find the folder by its s3_drops row, and a rejection's daylily.error
    must come after daylily.in_progress."""
    folder = s3lab.drop_folder("run9")
    intake = make_intake(s3lab)
    await grant(pool, "acme", s3lab.bucket)
    seen_at_announcement: list[tuple[str | None, bool]] = []
    announce = announcer(bus)

    async def watched(events: Sequence[Envelope]) -> None:
        recorded = await pool.fetchval("SELECT workset_id FROM s3_drops WHERE folder = $1", folder)
        seen_at_announcement.append((recorded, s3lab.exists(folder + sentinels.IN_PROGRESS)))
        await announce(events)

    async with open_object_store(
        Settings(aws_endpoint_url=s3lab.url, aws_region="us-west-2"), intake
    ) as store:
        drops = DropIntake(pool, store, region="us-west-2", intake=intake, announce=watched)
        outcome = await drops.consider(s3lab.bucket, folder)
    assert outcome.action == "submitted" and outcome.workset_id is not None
    assert seen_at_announcement == [(outcome.workset_id, True)]
    await _published_once_before_the_relay(pool, bus, outcome.workset_id)
