"""What validating a submission costs in PostgreSQL transactions, counted from the client side (see
services/scheduler/tests/test_transactions.py): the validator's own wiring (submission_check), with an
onboarded customer so the storage quota and the tenant's own bucket are read too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import asyncpg
import pytest
from aiohttp import web

from services.validator.app import init_app
from services.validator.handlers import keep_sentinel
from services.validator.submission import validate_handler
from services.validator.tests.test_handlers import DELIVERY, dropped_from_folder, submit_and_get_event
from stamen.customers import NewCustomer
from stamen.customers.repository import CustomerRepository
from stamen.events.envelope import new_envelope
from stamen.events.types import WorksetCompleted
from stamen.inputs import sentinels
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.objects import S3ObjectStore, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.idempotent import GroupCommit
from stamen.service.keys import INBOX_GROUP, POOL
from stamen.settings import Settings
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork
from stamen.tenancy import BucketGrantRepository
from tests.intake.s3kit import S3Lab
from tests.transactions import TransactionCounter


@pytest.fixture
async def store(s3lab: S3Lab) -> AsyncIterator[S3ObjectStore]:
    async with open_object_store(Settings(AWS_ENDPOINT_URL=s3lab.url), IntakeSettings()) as opened:
        yield opened


async def test_a_submission_is_validated_in_two_transactions(
    pool: asyncpg.Pool, database_url: str, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """One read (the workset, the tenant's buckets and its customer row together; they were three
    transactions, then three statements) and the decision (no inbox claim: the workset's state says
    whether it was made); a redelivery reads, finds it done, and writes nothing."""
    new = NewCustomer.create(
        customer_name="Acme", email="ops@acme.example.org", customer_id="acme", max_concurrent_worksets=5,
        max_storage_gb=100,
    )  # fmt: skip
    async with pool.acquire() as conn:
        # Its own bucket is the lab's: the spec's inputs are allowed only through the customer row.
        assert await CustomerRepository(conn).insert_onboarding(
            new, s3_bucket=s3lab.bucket, region="us-west-2"
        )
    ws_id, event = await submit_and_get_event(pool, s3lab.spec())
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        app = web.Application()
        app[POOL], app[OBJECT_STORE], app[INTAKE_SETTINGS] = counting, store, IntakeSettings()
        handler = validate_handler(app, Settings(AWS_ENDPOINT_URL=s3lab.url))
        await handler(event, DELIVERY)
        validated = counter.transactions[:]
        await handler(event, DELIVERY)
        redelivered = counter.transactions[len(validated) :]
    finally:
        await counting.close()
    async with UnitOfWork(pool) as uow:
        ws = await uow.worksets.get(ws_id)
        history = await uow.worksets.history(ws_id)
    assert ws.state.value == "queued", history[-1].reason
    assert [h.to_state for h in history] == ["submitted", "validating", "queued"]
    assert len(validated) == 2, validated
    # The workset (row-locked) with the tenant's customer row and buckets in one statement (were three),
    # `validating` (asyncpg's look-ups of the customers row's types, once per connection, left out).
    read = [s for s in validated[0] if "jit" not in s and "typeinfo_tree" not in s]
    assert len(read) == 2, [s[:60] for s in read]
    assert all(table in read[0] for table in ("FROM worksets", "customers", "bucket_grants")), read[0]
    assert "FOR UPDATE" in read[0]
    # The decision: the workset read and locked, and its save with the findings and the estimate
    # (workset_validations written by the save's statement: was a statement of its own). No inbox claim
    # (was the first statement): no transition leads back to `submitted` or `validating`.
    decision = [s for s in validated[1] if "jit" not in s and "typeinfo_tree" not in s]
    assert len(decision) == 2, [s[:60] for s in decision]
    assert "FOR UPDATE" in decision[0]
    assert "UPDATE worksets" in decision[1] and "INSERT INTO workset_validations" in decision[1]
    assert len(redelivered) == 1, redelivered  # the read, which finds it decided (was a claim besides)


async def test_the_validators_group_starts_at_once_and_one_fetchs_messages_share_it(
    pool: asyncpg.Pool, database_url: str, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """Someone waits on every call of the validator's group (submitted -> queued): it sits out no gathering
    window (was 5 ms, twice per workset); the messages of one fetch, whose handlers run before the group's
    task does, still share its transaction: three validations, one read (their decisions come as their
    checks end)."""
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url)
    app = init_app(settings)
    group = app[INBOX_GROUP]
    assert group.gather_seconds == 0
    async with pool.acquire() as conn:
        await BucketGrantRepository(conn).grant("acme", s3lab.bucket, "read-write", granted_by="test")
    events = [(await submit_and_get_event(pool, s3lab.spec(f"w{i}")))[1] for i in range(3)]
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        app[POOL], app[OBJECT_STORE] = counting, store
        handler = validate_handler(app, settings)
        await asyncio.gather(*(handler(event, DELIVERY) for event in events))
        await counter.count()
    finally:
        await counting.close()
    reads = [t for t in counter.transactions if any("bucket_grants" in s for s in t)]
    assert len(reads) == 1, counter.transactions
    assert sum("FOR UPDATE" in s for s in reads[0]) == 3
    async with UnitOfWork(pool) as uow:
        states = [(await uow.worksets.get(str(e.workset_id))).state.value for e in events]
    assert states == ["queued"] * 3


async def test_the_s3_client_has_a_connection_for_each_input_pair_of_the_validations_at_once(
    s3lab: S3Lab,
) -> None:
    """The service's one S3 client bounds its calls in flight: 16 validations at once, each reading R1 and
    R2 together, need 32 connections (it had 16, so half of a burst's GETs waited for one)."""
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url)  # STAMEN_VALIDATION_CONCURRENCY: 16
    async with open_object_store(settings, IntakeSettings()) as opened:
        assert opened.client.meta.config.max_pool_connections == 32


async def test_the_sentinels_group_asks_which_worksets_were_dropped_in_one_statement(
    pool: asyncpg.Pool, database_url: str, s3lab: S3Lab, store: S3ObjectStore
) -> None:
    """Almost no terminal workset came from an S3 drop: a group of the sentinel consumer's events asks which
    did in one statement (its screen), and only those read their drop and write a sentinel; the others cost
    nothing more (was a SAVEPOINT, a read of s3_drops and a RELEASE each)."""
    ids = [(await submit_and_get_event(pool, s3lab.spec(f"w{i}")))[0] for i in range(4)]
    folder = await dropped_from_folder(pool, s3lab, ids[0], "run1")
    events = [
        new_envelope(WorksetCompleted(), tenant_id="acme", region="us-west-2", workset_id=ws_id)
        for ws_id in ids
    ]
    counter = TransactionCounter()
    counting = await create_pool(database_url, init=counter.init)
    try:
        group = GroupCommit(lambda: counting, gather_seconds=0.2)
        handler = partial(keep_sentinel, pool=lambda: counting, store=lambda: store, group=group)
        await asyncio.gather(*(handler(event, DELIVERY) for event in events))
        await counter.count()
    finally:
        await counting.close()
    statements = [s for t in counter.transactions for s in t]
    assert sum("s3_drops WHERE workset_id = ANY" in s for s in statements) == 1, statements
    assert sum("s3_drops WHERE workset_id = $1" in s for s in statements) == 1, statements  # the dropped one
    assert not any("SAVEPOINT" in s for s in statements), statements
    assert s3lab.exists(folder + sentinels.COMPLETE)
    listing = s3lab.client.list_objects_v2(Bucket=s3lab.bucket, Prefix="daylily_monitoring/")
    assert len(listing.get("Contents", [])) == 1
