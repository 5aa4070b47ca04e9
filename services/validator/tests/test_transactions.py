"""What validating a submission costs in PostgreSQL transactions, counted from the client side (see
services/scheduler/tests/test_transactions.py): the validator's own wiring (submission_check), with an
onboarded customer so the storage quota and the tenant's own bucket are read too."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from services.validator.submission import validate_handler
from services.validator.tests.test_handlers import DELIVERY, submit_and_get_event
from stamen.customers import NewCustomer
from stamen.customers.repository import CustomerRepository
from stamen.inputs.contexts import INTAKE_SETTINGS, OBJECT_STORE
from stamen.inputs.objects import S3ObjectStore, open_object_store
from stamen.inputs.settings import IntakeSettings
from stamen.service.keys import POOL
from stamen.settings import Settings
from stamen.store.db import create_pool
from stamen.store.unit_of_work import UnitOfWork
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
    transactions) and the decision with its inbox claim; a redelivery reads and finds it done."""
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
    assert any("customers" in s for s in validated[0]) and any("bucket_grants" in s for s in validated[0])
    assert any("INSERT INTO inbox" in s for s in validated[1]), validated[1]
    assert len(redelivered) == 2, redelivered  # the read, then the claim that finds it handled
