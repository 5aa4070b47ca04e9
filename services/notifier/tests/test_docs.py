"""docs/notifications.md tells the truth: its receiver example, run as written, accepts what the
notifier's webhook channel sends, refuses a replay and an edited body, and acts once per key; every
error code of notifications is documented there and in docs/api.md; every setting in configuration.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from services.notifier.tests.support import start_site
from stamen.diagnostics.codes import Severity
from stamen.notifications.channels.base import Outgoing
from stamen.notifications.channels.webhook import WebhookChannel
from stamen.notifications.errors import ERRORS
from stamen.notifications.kinds import Kind
from stamen.notifications.messages import Facts, render
from stamen.notifications.secrets import StaticSecrets, secret_name
from stamen.notifications.settings import NotifySettings

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "notifications.md").read_text()
SECRET = "docs-example-secret-0123456789"


def receiver_example() -> str:
    after = DOC.split("<!-- receiver-example -->", 1)[1]
    example = re.search(r"```python\n(.*?)```", after, re.S)
    assert example is not None, "docs/notifications.md lost its receiver example"
    return example.group(1)


async def no_limit(_limit: str, _key: str) -> None:
    return None


async def test_the_documented_receiver_accepts_the_notifier_and_refuses_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STAMEN_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "receiver_example"}
    exec(compile(receiver_example(), "docs/notifications.md", "exec"), namespace)
    handled: list[dict[str, Any]] = []
    namespace["handle"] = handled.append
    app: web.Application = namespace["app"]
    arrived: list[tuple[bytes, dict[str, str]]] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        arrived.append((await request.read(), dict(request.headers)))
        return await handler(request)

    app.middlewares.append(record)
    runner, base = await start_site(app)
    url = f"{base}/stamen"
    try:
        facts = Facts(kind=Kind.COMPLETED, severity=Severity.INFO, event_id="e-1", event_type="workset.completed",
                      occurred_at=datetime.now(UTC), owner="acme", region="us-west-2")  # fmt: skip
        out = Outgoing(
            "acme", "webhook", url, "e-1:webhook:abc", "e-1", "workset.completed", None, render(facts)
        )
        async with aiohttp.ClientSession() as http:
            channel = WebhookChannel(http, StaticSecrets({secret_name("acme", "webhook-secret"): SECRET}),
                                     allow_http=True, allow_private=True)  # fmt: skip
            assert (await channel.send(out, no_limit)).reference == "HTTP 200"
            retry = Outgoing(**{**out.__dict__, "attempt": 2})  # a retry: new signature, same key
            assert (await channel.send(retry, no_limit)).reference == "HTTP 200"
            body, headers = arrived[0]
            for data, status in ((body, 409), (body.replace(b"acme", b"evil"), 401)):
                async with http.post(url, data=data, headers=headers) as resp:
                    assert resp.status == status
    finally:
        await runner.cleanup()
    assert [n["id"] for n in handled] == ["e-1:webhook:abc"]  # acted on once


def test_every_error_code_and_setting_is_documented() -> None:
    api = (REPO / "docs" / "api.md").read_text()
    config = (REPO / "docs" / "configuration.md").read_text()
    for error in ERRORS:
        assert f"`{error.code}`" in DOC and f"`{error.code}`" in api, error.code
    names = [
        f"`STAMEN_NOTIFY_{name.upper()}`"
        for name in NotifySettings.model_fields
        if name not in ("aws_endpoint_url", "aws_region")
    ]
    assert [n for n in names if n not in config] == []
