"""Parked outbox events are visible to operators, with the broker's answer, over the API and the CLI, and
can be handed back to the relay; customers see none of it."""

from __future__ import annotations

import uuid

import asyncpg

from tests.api.conftest import World
from tests.scheduler_cli.test_scheduler_cli import stamen


async def park_one(pool: asyncpg.Pool) -> int:
    """A row as the relay leaves one the broker refused for the last time (`OutboxQueue.record_failure`
    with park): parked in the statement that writes it, so the world's relay never claims it."""
    async with pool.acquire() as conn:
        row_id = await conn.fetchval(
            """INSERT INTO outbox (event_id, subject, headers, body, attempts, last_error, next_attempt_at,
                                   parked_at)
               VALUES ($1, $2, '{}', $3, 1, 'MaxPayloadError: nats: maximum payload exceeded',
                       now() + interval '1 second', now())
               RETURNING id""",
            uuid.uuid4(), "stamen.evt.tenant-a.workset.submitted", b"x" * 2048,
        )  # fmt: skip
    return int(row_id)


async def test_operators_see_and_retry_parked_events(world: World, database_url: str) -> None:
    first, second = await park_one(world.pool), await park_one(world.pool)
    listed = await world.client.get("/api/v1/outbox/parked", headers=world.operator)
    assert listed.status == 200
    items = (await listed.json())["items"]
    assert [(i["id"], i["size_bytes"], i["attempts"]) for i in items] == [(first, 2048, 1), (second, 2048, 1)]
    assert items[0]["last_error"] == "MaxPayloadError: nats: maximum payload exceeded"
    for path, method in (("/api/v1/outbox/parked", "GET"), ("/api/v1/outbox/retry", "POST")):
        refused = await world.client.request(method, path, headers=world.key(world.a), json={"all": True})
        assert refused.status == 403, path

    nothing = await world.client.post("/api/v1/outbox/retry", headers=world.operator, json={})
    assert nothing.status == 400 and (await nothing.json())["code"] == "OUTBOX_RETRY_NOTHING"
    retried = await world.client.post(
        "/api/v1/outbox/retry", headers=world.operator, json={"ids": [first, 424242]}
    )
    assert await retried.json() == {"retried": [first], "not_parked": [424242]}

    [row] = stamen(database_url, "outbox", "parked")
    assert row["id"] == second and "maximum payload" in row["last_error"]
    assert stamen(database_url, "outbox", "retry", "--all") == {"retried": [second], "not_parked": []}
    assert stamen(database_url, "outbox", "parked") == []
    assert stamen(database_url, "outbox", "retry", ok=False)["code"] == "OUTBOX_RETRY_NOTHING"
