"""Per-tenant NATS credentials on a real nats-server whose authorization block stamen renders from
PostgreSQL and reloads: a lab system reaches its own intake subject (through the real validator) and
nothing else; revoking a credential or suspending the customer cuts it off without restarting NATS."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout

from services.validator.app import init_app
from stamen.bus.connections import connect_nats, ensure_streams
from stamen.bus.metrics import INTAKE_REPLIES_REFUSED
from stamen.natsauth import (
    NatsCredentialService,
    ServiceUser,
    generate_user_key,
    inbox_prefix,
    public_key_of,
    render_authorization,
    reply_subject_allowed,
)
from stamen.natsauth.sync import NatsAuthSync, render_to_file
from stamen.stack.servers import NatsServer
from tests.intake.s3kit import S3Lab, grant, make_intake, make_settings

PASSWORD = "service-secret"


@dataclass
class SecuredNats:
    server: NatsServer
    service_url: str
    sync: NatsAuthSync
    credentials: NatsCredentialService

    @property
    def bare_url(self) -> str:
        return self.server.url


@dataclass
class LabClient:
    nc: NATS
    errors: list[str] = field(default_factory=list)


async def add_customer(pool: asyncpg.Pool, customer_id: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO customers (customer_id, customer_name, email, s3_bucket, max_concurrent_worksets,
                                      max_storage_gb, region, status)
               VALUES ($1, $1, $1 || '@example.org', 'bucket-' || $1, 2, 100, 'us-west-2', 'active')""",
            customer_id,
        )


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def secured(tmp_path: Path, pool: asyncpg.Pool, database_url: str) -> AsyncIterator[SecuredNats]:
    for tenant in ("lab-a", "lab-b"):
        await add_customer(pool, tenant)
    service = ServiceUser.from_password(PASSWORD)
    auth_file = tmp_path / "nats" / "auth.conf"
    async with pool.acquire() as conn:
        await render_to_file(conn, service, auth_file)
    server = NatsServer(tmp_path / "nats", auth_file=auth_file).start()
    sync = NatsAuthSync(database_url, service, auth_file, server.reload, resync_seconds=60)
    stop = asyncio.Event()
    task = asyncio.create_task(sync.run(stop))
    try:
        yield SecuredNats(server, server.url_for(service.name, PASSWORD), sync, NatsCredentialService(pool))
    finally:
        stop.set()
        await task
        server.stop()


async def lab_connect(url: str, seed: str, tenant: str) -> LabClient:
    """How a lab system connects: its seed, and replies under its own inbox prefix."""
    client = LabClient(nc=NATS())

    async def on_error(exc: Exception) -> None:
        client.errors.append(str(exc))

    await client.nc.connect(
        url,
        nkeys_seed_str=seed,
        inbox_prefix=inbox_prefix(tenant),
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
    )
    return client


async def connect_when_allowed(url: str, seed: str, tenant: str) -> LabClient:
    """The credential is usable once the sync has rendered it and nats-server reloaded."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await lab_connect(url, seed, tenant)
        except Exception:
            assert time.monotonic() < deadline, "the new credential never became usable"
            await asyncio.sleep(0.2)


@pytest.fixture
async def validator(
    secured: SecuredNats, database_url: str, s3lab: S3Lab, pool: asyncpg.Pool
) -> AsyncIterator[TestServer]:
    await grant(pool, "lab-a", s3lab.bucket)  # lab-a's worksets read and write the lab bucket
    app = init_app(make_settings(database_url, secured.service_url, s3lab.url), intake=make_intake(s3lab))
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


async def test_lab_system_reaches_its_own_intake_and_nothing_else(
    secured: SecuredNats, validator: TestServer, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    created = await secured.credentials.create("lab-a", "lims")
    assert public_key_of(created.seed) == created.record.public_key
    lab = await connect_when_allowed(secured.bare_url, created.seed, "lab-a")

    # Its own subject: the real validator answers, and the workset is lab-a's.
    reply = await lab.nc.request(
        "stamen.intake.lab-a", json.dumps(s3lab.spec("via-nats")).encode(), timeout=15
    )
    answer = json.loads(reply.data)
    assert answer["ok"], answer
    async with pool.acquire() as conn:
        owner = await conn.fetchval("SELECT tenant_id FROM worksets WHERE id = $1", answer["workset_id"])
    assert owner == "lab-a"

    # Another tenant's intake subject, the events, JetStream's API, another tenant's replies: the server
    # refuses each, and says so on the connection.
    spoof = json.dumps(s3lab.spec("spoof")).encode()
    await lab.nc.publish("stamen.intake.lab-b", spoof)
    await lab.nc.publish("$JS.API.STREAM.INFO.STAMEN_EVENTS", b"")
    await lab.nc.publish("stamen.evt.lab-a.workset.completed", b"{}")
    await lab.nc.subscribe("stamen.evt.>")
    await lab.nc.subscribe("_INBOX.lab-b.>")
    await lab.nc.flush(timeout=5)
    refused = [
        'publish to "stamen.intake.lab-b"',
        'publish to "$js.api.stream.info.stamen_events"',
        'publish to "stamen.evt.lab-a.workset.completed"',
        'subscription to "stamen.evt.>"',
        'subscription to "_inbox.lab-b.>"',
    ]

    async def all_refused() -> bool:
        said = " ".join(lab.errors).lower()
        return all(f"permissions violation for {r}" in said for r in refused)

    await eventually(all_refused, f"the server to refuse {refused}; it said {lab.errors}")
    assert lab.nc.is_connected  # a refusal is not a disconnect: its own intake still works
    again = await lab.nc.request("stamen.intake.lab-a", json.dumps(s3lab.spec("again")).encode(), timeout=15)
    assert json.loads(again.data)["ok"]
    async with pool.acquire() as conn:
        tenants = {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM worksets")}
    assert tenants == {"lab-a"}
    await lab.nc.close()


async def test_unknown_or_missing_credentials_cannot_connect(secured: SecuredNats) -> None:
    stranger_seed, _ = generate_user_key()  # a well-formed key nobody registered
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await lab_connect(secured.bare_url, stranger_seed, "lab-a")
    anonymous = NATS()
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await anonymous.connect(secured.bare_url, allow_reconnect=False, connect_timeout=3)
    wrong_password = secured.service_url.replace(PASSWORD, "guess")
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await NATS().connect(wrong_password, allow_reconnect=False, connect_timeout=3)


async def test_revoking_or_suspending_cuts_a_connected_lab_off_and_services_carry_on(
    secured: SecuredNats, pool: asyncpg.Pool
) -> None:
    a = await secured.credentials.create("lab-a", "lims")
    b = await secured.credentials.create("lab-b", "sequencer")
    lab_a = await connect_when_allowed(secured.bare_url, a.seed, "lab-a")
    lab_b = await connect_when_allowed(secured.bare_url, b.seed, "lab-b")
    service = await connect_nats(secured.service_url, name="test-service")
    await ensure_streams(service.jetstream(), dedup_window_seconds=60)

    await secured.credentials.revoke("lab-a", a.record.id)
    await eventually(lambda: asyncio.sleep(0, lab_a.nc.is_closed), "the revoked lab's connection to close")
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await lab_connect(secured.bare_url, a.seed, "lab-a")
    assert lab_b.nc.is_connected  # other tenants are untouched

    async with pool.acquire() as conn:
        await conn.execute("UPDATE customers SET status = 'suspended' WHERE customer_id = 'lab-b'")
    await eventually(
        lambda: asyncio.sleep(0, lab_b.nc.is_closed), "the suspended customer's connection to close"
    )

    # The services' own connection lived through both reloads, JetStream included.
    assert service.is_connected
    await service.jetstream().stream_info("STAMEN_EVENTS")
    await service.close()


async def test_another_tenants_credential_cannot_be_revoked_or_listed(secured: SecuredNats) -> None:
    from stamen.natsauth import NatsCredentialNotFound, NatsCredentialRequestInvalid

    a = await secured.credentials.create("lab-a", "lims")
    with pytest.raises(NatsCredentialNotFound):
        await secured.credentials.revoke("lab-b", a.record.id)
    assert await secured.credentials.list_credentials("lab-b") == []
    with pytest.raises(NatsCredentialRequestInvalid, match="already exists"):
        await secured.credentials.create("lab-a", "lims")
    with pytest.raises(NatsCredentialRequestInvalid, match="does not exist"):
        await secured.credentials.create("lab-z", "lims")


def test_the_rendered_block_grants_each_tenant_only_its_subjects() -> None:
    from stamen.natsauth import TenantKey

    text = render_authorization(ServiceUser("stamen", "$2b$11$hash"), [TenantKey("lab-a", "UAAA")])
    assert '"publish": {"allow": ["stamen.intake.lab-a"]}' in text
    assert '"subscribe": {"allow": ["_INBOX.lab-a.>"]}' in text
    assert '{"password": "$2b$11$hash", "user": "stamen"}' in text


async def stream_counts(js: Any) -> dict[str, int]:
    return {name: (await js.stream_info(name)).state.messages for name in ("STAMEN_EVENTS", "STAMEN_DLQ")}


async def test_a_foreign_reply_subject_delivers_nothing_anywhere(
    secured: SecuredNats, validator: TestServer, pool: asyncpg.Pool, s3lab: S3Lab
) -> None:
    """With A's seed, a request whose reply subject is B's inbox or an event subject is dropped unanswered:
    nothing reaches B, nothing is published anywhere (a subscriber on `>` with the services' credentials
    sees no such subject), no stream grows, no workset is made; it is counted. A's own inbox still works."""
    a = await secured.credentials.create("lab-a", "lims")
    b = await secured.credentials.create("lab-b", "lims")
    lab_a = await connect_when_allowed(secured.bare_url, a.seed, "lab-a")
    lab_b = await connect_when_allowed(secured.bare_url, b.seed, "lab-b")
    b_inbox = await lab_b.nc.subscribe("_INBOX.lab-b.>")
    spy = await connect_nats(secured.service_url, name="test-spy")
    seen: list[tuple[str, bytes]] = []

    async def record(msg: Any) -> None:
        seen.append((msg.subject, msg.data))

    await spy.subscribe(">", cb=record)
    await spy.flush()
    js = spy.jetstream()
    await ensure_streams(js, dedup_window_seconds=60)
    before = await stream_counts(js)
    refused = INTAKE_REPLIES_REFUSED.labels(tenant="lab-a")
    counted = refused._value.get()
    injected = [
        "_INBOX.lab-b.stolen",
        "stamen.evt.lab-b.workset.completed",
        "stamen.dlq.undecodable.x",
        "_INBOX.lab-a.*",
        "_INBOX.lab-a",
    ]
    for i, reply in enumerate(injected):
        await lab_a.nc.publish(
            "stamen.intake.lab-a", json.dumps(s3lab.spec(f"injected-{i}")).encode(), reply=reply
        )
    await lab_a.nc.flush()
    await eventually(
        lambda: asyncio.sleep(0, refused._value.get() == counted + len(injected)),
        "every injected request to be counted as refused",
    )
    await spy.flush()
    assert await stream_counts(js) == before
    leaked = [
        (s, d[:80])
        for s, d in seen
        if s in injected or s.startswith(("_INBOX.lab-b", "stamen.evt", "stamen.dlq"))
    ]
    assert leaked == []
    with pytest.raises(NatsTimeout):
        await b_inbox.next_msg(timeout=0.5)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM worksets") == 0
    assert lab_a.errors == []  # publishing with a reply subject is not a permissions violation

    # The control: A's own inbox gets its answer, which the spy sees, and a workset is made.
    reply = await lab_a.nc.request(
        "stamen.intake.lab-a", json.dumps(s3lab.spec("own-inbox")).encode(), timeout=15
    )
    assert json.loads(reply.data)["ok"]
    assert reply.subject.startswith("_INBOX.lab-a.")
    await eventually(
        lambda: asyncio.sleep(0, any(s == reply.subject for s, _ in seen)), "the spy to see the reply"
    )
    for client in (lab_a, lab_b):
        await client.nc.close()
    await spy.close()


def test_the_reply_rule() -> None:
    assert reply_subject_allowed("acme", "_INBOX.acme.Kq3x9")
    assert reply_subject_allowed("acme", "_INBOX.acme.Kq3x9.1")
    for reply in (
        "_INBOX.acme",
        "_INBOX.acme.",
        "_INBOX.acme.*",
        "_INBOX.acme.>",
        "_INBOX.acme..x",
        "_INBOX.acme-b.x",
        "_INBOX.acmex.y",
        "stamen.evt.acme.workset.completed",
        "_INBOX.ACME.x",
        "_INBOX.acme.a b",
        "_INBOX.acme." + "x" * 300,
    ):
        assert not reply_subject_allowed("acme", reply), reply
