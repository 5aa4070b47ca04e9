"""Notification preferences and deliveries over HTTP: secrets go in and never come out (nor into the
logs), each tenant sees its own deliveries, operators set their own preferences and resend a failed
delivery. (Tenant isolation of these routes is in the route-table matrix, test_isolation.py.)"""

from __future__ import annotations

import json
import uuid

import pytest

from stamen.notifications.kinds import OPERATORS
from tests.api.conftest import World

WEBHOOK_SECRET = "whsec-api-test-0123456789abcdef"
LINEAR_KEY = "lin_api_apitest_0123456789"


async def test_preferences_and_deliveries_over_http(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    c, a, b = world.client, world.a, world.b
    prefs = {
        "only_final_failures": True,
        "webhook": {"enabled": True, "url": "https://hooks.example.org/stamen", "secret": WEBHOOK_SECRET},
        "linear": {"enabled": True, "team_id": str(uuid.uuid4()), "api_key": LINEAR_KEY},
        "quiet_hours": {"enabled": True, "start": "21:30", "end": "06:00", "timezone": "Europe/Berlin"},
    }
    put = await c.put("/api/v1/notification-preferences", json=prefs, headers=world.key(a))
    text = await put.text()
    assert put.status == 200, text
    doc = json.loads(text)
    assert doc["owner"] == a.id and doc["secrets"] == {"linear_api_key_set": True, "webhook_secret_set": True}
    assert doc["preferences"]["quiet_hours"]["start"] == "21:30" and doc["sns_topic_arn"].endswith(
        f"{a.id}-events"
    )
    got = await c.get("/api/v1/notification-preferences", headers=world.key(a))
    assert (await got.json())["preferences"] == doc["preferences"]
    # Secrets are not needed again to change the rest.
    again = await c.put(
        "/api/v1/notification-preferences",
        json={"webhook": {"enabled": True, "url": "https://hooks.example.org/v2"}},
        headers=world.key(a),
    )
    assert again.status == 200 and (await again.json())["secrets"]["webhook_secret_set"] is True
    # A tenant without a stored secret must give one; the error names the field.
    bad = await c.put(
        "/api/v1/notification-preferences",
        json={"webhook": {"enabled": True, "url": "https://hooks.example.org/x"}},
        headers=world.key(b),
    )
    err = await bad.json()
    assert bad.status == 400 and err["code"] == "NOTIFY_PREFERENCES_INVALID"
    assert [e["field"] for e in err["details"]["errors"]] == ["webhook.secret"]
    bad = await c.put(
        "/api/v1/notification-preferences",
        json={"quiet_hours": {"timezone": "Mars/Base"}},
        headers=world.key(a),
    )
    assert bad.status == 400 and (await bad.json())["code"] == "REQUEST_INVALID"

    # The operators' own preferences: operators only.
    ops = await c.put(
        "/api/v1/notification-preferences",
        json={"operators": True, "sns": {"enabled": False}},
        headers=world.operator,
    )
    assert ops.status == 200 and (await ops.json())["owner"] == OPERATORS
    refused = await c.get(
        "/api/v1/notification-preferences", params={"operators": "true"}, headers=world.key(a)
    )
    assert refused.status == 403 and (await refused.json())["code"] == "AUTH_FORBIDDEN"

    # Deliveries: a failed one of A's, as the notifier leaves it.
    async with world.pool.acquire() as conn:
        failed_id = await conn.fetchval(
            """INSERT INTO notification_deliveries (occurred_at, event_id, event_type, kind, owner, workset_id, channel, recipient,
                   idempotency_key, severity, message, state, attempts, last_error)
               VALUES (now(), $1, 'workset.dead_lettered', 'failed', $2, $3, 'webhook', 'https://hooks.slack.com/services/T1/B2/sekrit',
                       'k-1', 'error', '{"message": {"title": "Workset x failed for good"}}', 'failed', 10,
                       '10 attempts failed; last: webhook https://hooks.slack.com/… answered HTTP 500')
               RETURNING id""",
            uuid.uuid4(),
            a.id,
            a.target.workset_id,
        )
    listed = await (
        await c.get("/api/v1/notifications", params={"state": "failed"}, headers=world.key(a))
    ).json()
    [row] = listed["items"]
    assert (
        row["id"] == failed_id and row["recipient"] == "https://hooks.slack.com/…" and row["attempts"] == 10
    )
    assert row["title"] == "Workset x failed for good" and listed["next_before"] is None
    assert (await (await c.get("/api/v1/notifications", headers=world.key(b))).json())["items"] == []
    resend = await c.post(f"/api/v1/notifications/{failed_id}/resend", headers=world.operator)
    assert resend.status == 200 and (await resend.json())["state"] == "pending"
    twice = await c.post(f"/api/v1/notifications/{failed_id}/resend", headers=world.operator)
    assert twice.status == 409 and (await twice.json())["code"] == "NOTIFICATION_NOT_RESENDABLE"
    missing = await c.post("/api/v1/notifications/999999/resend", headers=world.operator)
    assert missing.status == 404 and (await missing.json())["code"] == "NOTIFICATION_NOT_FOUND"

    out = capsys.readouterr()
    for secret in (WEBHOOK_SECRET, LINEAR_KEY, "sekrit"):
        assert secret not in out.out + out.err
