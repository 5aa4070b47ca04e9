"""`stamen notify`, as an operator runs it (a subprocess per command, --json), on PostgreSQL and moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import asyncpg

from services.notifier.tests.conftest import WEBHOOK_SECRET


def stamen(database_url: str, moto: str, *args: str, stdin: str = "", ok: bool = True) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "stamen", "notify", *args, "--json"],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "AWS_ENDPOINT_URL": moto,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "STAMEN_NOTIFY_WEBHOOK_ALLOW_HTTP": "false",
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode == 0) is ok, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    doc = json.loads(out.stdout)
    return doc if ok else doc["error"]


async def test_preferences_deliveries_and_resend_from_the_command_line(
    pool: asyncpg.Pool, database_url: str, moto_endpoint: str, tenant: str
) -> None:
    db, moto = database_url, moto_endpoint
    prefs = (
        "only_final_failures: true\n"
        "webhook:\n  enabled: true\n  url: https://hooks.example.org/stamen\n"
        f"  secret: {WEBHOOK_SECRET}\n"
        "quiet_hours: {enabled: true, start: '22:00', end: '07:00', timezone: America/Chicago}\n"
    )
    shown = stamen(db, moto, "prefs", "set", tenant, "--file", "-", stdin=prefs)
    assert shown["owner"] == tenant and shown["secrets"]["webhook_secret_set"] is True
    assert shown["preferences"]["only_final_failures"] is True and WEBHOOK_SECRET not in json.dumps(shown)
    assert stamen(db, moto, "prefs", "show", tenant)["preferences"] == shown["preferences"]
    bad = stamen(
        db, moto, "prefs", "set", tenant, stdin="webhook: {url: 'http://hooks.example.org/x'}\n", ok=False
    )
    assert bad["code"] == "NOTIFY_PREFERENCES_INVALID" and "webhook.url" in bad["message"]

    async with pool.acquire() as conn:
        delivery = await conn.fetchval(
            """INSERT INTO notification_deliveries (occurred_at, event_id, event_type, kind, owner, channel, recipient, idempotency_key,
                   severity, message, state, attempts, last_error)
               VALUES (now(), $1, 'workset.completed', 'completed', $2, 'webhook', 'https://hooks.example.org/stamen/secret-path',
                       'k-cli', 'info', '{"message": {"title": "Workset w completed", "text": "the text"}}', 'failed', 10,
                       'HTTP 500') RETURNING id""",
            uuid.uuid4(),
            tenant,
        )
    [row] = stamen(db, moto, "ls", "--tenant", tenant, "--state", "failed")
    assert (row["id"], row["recipient"], row["title"]) == (
        delivery,
        "https://hooks.example.org/…",
        "Workset w completed",
    )
    resent = stamen(db, moto, "resend", str(delivery))
    assert (resent["state"], resent["resent_by"]) == ("pending", "cli")
    assert stamen(db, moto, "resend", "424242", ok=False)["code"] == "NOTIFICATION_NOT_FOUND"
