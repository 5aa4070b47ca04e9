"""Onboarding against moto's server and real PostgreSQL: what it makes, idempotency, rollback, resume."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest

from stamen.customers import (
    AsyncCustomerManager,
    CustomerConflict,
    CustomerManager,
    CustomerNotFound,
    CustomerSettings,
    InvalidCustomer,
    NotConfigured,
    OnboardingFailed,
)
from stamen.customers.model import bucket_name
from stamen.customers.repository import CustomerRepository
from stamen.events.envelope import decode_envelope
from stamen.events.types import CustomerCreated
from stamen.store.slots import SlotLedger
from tests.customers.awskit import customer_settings, unique


class Aws:
    """Plain boto3 clients on the same moto server, to look at what onboarding left."""

    def __init__(self, settings: CustomerSettings) -> None:
        kw: dict[str, Any] = {"endpoint_url": settings.aws_endpoint_url}
        self.settings = settings
        self.s3: Any = boto3.client("s3", region_name=settings.region, **kw)
        self.sns: Any = boto3.client("sns", region_name=settings.region, **kw)
        self.idp: Any = boto3.client("cognito-idp", region_name=settings.resolved_cognito_region(), **kw)

    def bucket_exists(self, bucket: str) -> bool:
        return any(b["Name"] == bucket for b in self.s3.list_buckets()["Buckets"])

    def topics(self, name: str) -> list[str]:
        arns = [t["TopicArn"] for t in self.sns.list_topics()["Topics"]]
        return [a for a in arns if a.rsplit(":", 1)[-1] == name]

    def pool_id(self) -> str:
        pools = self.idp.list_user_pools(MaxResults=60)["UserPools"]
        return str(next(p["Id"] for p in pools if p["Name"] == self.settings.cognito_user_pool_name))

    def users(self, email: str) -> list[dict[str, Any]]:
        pools = [
            p
            for p in self.idp.list_user_pools(MaxResults=60)["UserPools"]
            if p["Name"] == self.settings.cognito_user_pool_name
        ]
        if not pools:
            return []
        found = self.idp.list_users(UserPoolId=pools[0]["Id"])["Users"]
        return [u for u in found if {"Name": "email", "Value": email} in u["Attributes"]]


async def outbox_events(pool: asyncpg.Pool) -> list[Any]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT subject, body FROM outbox ORDER BY id")
    return [(r["subject"], decode_envelope(bytes(r["body"]))) for r in rows]


async def table_rows(pool: asyncpg.Pool, table: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(f"SELECT * FROM {table}")]


@pytest.fixture
def settings(moto_endpoint: str, database_url: str) -> CustomerSettings:
    return customer_settings(moto_endpoint, database_url)


async def test_onboarding_creates_bucket_topic_user_row_limit_and_event(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("acme")
    manager = AsyncCustomerManager(pool, settings)
    result = await manager.onboard_customer(
        customer_name="Acme Genomics",
        customer_id=cid,
        email="Lab-Admin@Acme.example",
        max_concurrent_worksets=3,
        max_storage_gb=250,
        cost_center="CC-42",
        billing_account_id="ba-7",
    )
    aws = Aws(settings)
    customer = result.customer
    assert result.created and customer.status == "active" and customer.customer_id == cid
    assert customer.email == "lab-admin@acme.example"
    bucket = customer.s3_bucket
    assert bucket == bucket_name(cid, "us-west-2") and aws.bucket_exists(bucket)
    assert aws.s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "us-west-2"

    assert aws.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in aws.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["stamen-expire-intermediates"]["Expiration"] == {"Days": 14}
    assert rules["stamen-expire-intermediates"]["Filter"] == {"Prefix": "intermediate/"}
    assert rules["stamen-results-infrequent-access"]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"}
    ]
    assert rules["stamen-noncurrent-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    tags = {t["Key"]: t["Value"] for t in aws.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags == {
        "stamen:customer-id": cid,
        "stamen:managed-by": "stamen",
        "stamen:cost-center": "CC-42",
        "stamen:billing-account": "ba-7",
    }
    assert aws.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicAcls"]

    [topic] = aws.topics(f"stamen-{cid}-events")
    assert customer.sns_topic_arn == topic
    topic_tags = {t["Key"]: t["Value"] for t in aws.sns.list_tags_for_resource(ResourceArn=topic)["Tags"]}
    assert topic_tags["stamen:customer-id"] == cid and topic_tags["stamen:cost-center"] == "CC-42"

    [user] = aws.users("lab-admin@acme.example")
    assert {"Name": "custom:customer_id", "Value": cid} in user["Attributes"]
    assert (
        customer.cognito_user_pool_id == aws.pool_id() and customer.admin_username == "lab-admin@acme.example"
    )

    async with pool.acquire() as conn:
        limits = await SlotLedger(conn).tenant_limits()  # what scheduler admission reads
    assert limits[cid] == 3
    [(subject, event)] = await outbox_events(pool)
    assert subject == f"stamen.evt.{cid}.customer.created"
    assert event.tenant_id == cid and isinstance(event.payload, CustomerCreated)
    assert event.payload.customer_name == "Acme Genomics"
    assert {(r.kind, r.state) for r in result.resources} == {
        ("s3_bucket", "created"),
        ("sns_topic", "created"),
        ("cognito_user", "created"),
    }
    assert await manager.get_customer(cid) == customer
    assert [c.customer_id for c in await manager.list_customers()] == [cid]


async def test_onboarding_twice_returns_the_same_customer_and_duplicates_nothing(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("beta")
    manager = AsyncCustomerManager(pool, settings)
    args: dict[str, Any] = dict(
        customer_name="Beta Lab",
        customer_id=cid,
        email="ops@beta.example",
        max_concurrent_worksets=2,
        max_storage_gb=10,
    )
    first = await manager.onboard_customer(**args)
    second = await manager.onboard_customer(**args)
    assert first.created and not second.created
    assert second.customer == first.customer
    aws = Aws(settings)
    assert len(aws.topics(f"stamen-{cid}-events")) == 1
    assert len(aws.users("ops@beta.example")) == 1
    assert len(await outbox_events(pool)) == 1
    assert len(await table_rows(pool, "customers")) == 1


async def test_concurrent_onboarding_of_one_customer_makes_it_once(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("gamma")
    managers = [AsyncCustomerManager(pool, settings) for _ in range(3)]
    results = await asyncio.gather(
        *(
            m.onboard_customer(
                customer_name="Gamma",
                customer_id=cid,
                email="a@gamma.example",
                max_concurrent_worksets=1,
                max_storage_gb=1,
            )
            for m in managers
        )
    )
    assert sorted(r.created for r in results) == [False, False, True]
    assert len({r.customer for r in results}) == 1
    assert len(await outbox_events(pool)) == 1
    assert len(Aws(settings).users("a@gamma.example")) == 1


async def test_same_id_with_other_details_is_a_conflict_and_changes_nothing(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("delta")
    manager = AsyncCustomerManager(pool, settings)
    first = await manager.onboard_customer(
        customer_name="Delta",
        customer_id=cid,
        email="a@delta.example",
        max_concurrent_worksets=1,
        max_storage_gb=1,
    )
    with pytest.raises(CustomerConflict) as err:
        await manager.onboard_customer(
            customer_name="Delta",
            customer_id=cid,
            email="b@delta.example",
            max_concurrent_worksets=1,
            max_storage_gb=1,
        )
    assert err.value.code == "CUSTOMER_CONFLICT"
    assert err.value.details["differences"]["email"] == {
        "existing": "a@delta.example",
        "requested": "b@delta.example",
    }
    assert await manager.get_customer(cid) == first.customer
    assert Aws(settings).users("b@delta.example") == []


async def assert_nothing_left(pool: asyncpg.Pool, aws: Aws, cid: str, email: str) -> None:
    assert not aws.bucket_exists(bucket_name(cid, aws.settings.region))
    assert aws.topics(f"stamen-{cid}-events") == []
    assert aws.users(email) == []
    for table in ("customers", "customer_resources", "tenant_limits", "outbox"):
        assert await table_rows(pool, table) == [], table


async def test_failure_after_the_bucket_rolls_everything_back(
    pool: asyncpg.Pool, moto_endpoint: str, database_url: str
) -> None:
    # A topic name SNS refuses (spaces): the bucket is made, then the topic step fails for real.
    settings = customer_settings(
        moto_endpoint, database_url, customer_topic_template="bad topic {customer_id}"
    )
    cid = unique("eps")
    with pytest.raises(OnboardingFailed) as err:
        await AsyncCustomerManager(pool, settings).onboard_customer(
            customer_name="Eps",
            customer_id=cid,
            email="x@eps.example",
            max_concurrent_worksets=1,
            max_storage_gb=1,
        )
    assert err.value.code == "CUSTOMER_ONBOARDING_FAILED"
    assert err.value.details["cause"] == "InvalidParameter"
    await assert_nothing_left(pool, Aws(settings), cid, "x@eps.example")


async def test_failure_at_the_user_step_deletes_topic_and_bucket_but_not_a_user_it_did_not_make(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("zeta")
    manager = AsyncCustomerManager(pool, settings)
    # Someone else's user already holds the email: onboarding must not adopt (or later delete) it.
    await manager.onboard_customer(
        customer_name="Other",
        customer_id=unique("other"),
        email="shared@zeta.example",
        max_concurrent_worksets=1,
        max_storage_gb=1,
    )
    aws = Aws(settings)
    before_buckets = {b["Name"] for b in aws.s3.list_buckets()["Buckets"]}
    with pytest.raises(OnboardingFailed) as err:
        await manager.onboard_customer(
            customer_name="Zeta",
            customer_id=cid,
            email="shared@zeta.example",
            max_concurrent_worksets=1,
            max_storage_gb=1,
        )
    assert err.value.details["cause"] == "CUSTOMER_RESOURCE_CONFLICT"
    assert not aws.bucket_exists(bucket_name(cid, "us-west-2"))
    assert aws.topics(f"stamen-{cid}-events") == []
    assert len(aws.users("shared@zeta.example")) == 1  # the other customer's user survives
    assert {b["Name"] for b in aws.s3.list_buckets()["Buckets"]} == before_buckets
    with pytest.raises(CustomerNotFound):
        await manager.get_customer(cid)


async def test_an_existing_bucket_not_made_by_stamen_is_refused_and_kept(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("eta")
    aws = Aws(settings)
    bucket = bucket_name(cid, "us-west-2")
    aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    with pytest.raises(OnboardingFailed) as err:
        await AsyncCustomerManager(pool, settings).onboard_customer(
            customer_name="Eta",
            customer_id=cid,
            email="a@eta.example",
            max_concurrent_worksets=1,
            max_storage_gb=1,
        )
    assert err.value.details["cause"] == "CUSTOMER_RESOURCE_CONFLICT"
    assert aws.bucket_exists(bucket)
    assert await table_rows(pool, "customers") == []


async def test_a_crashed_onboarding_is_resumed_by_the_next_call(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    """The state a process killed right after creating the bucket leaves: row 'onboarding', bucket
    recorded as pending and existing. The next call adopts the bucket and finishes."""
    cid = unique("theta")
    manager = AsyncCustomerManager(pool, settings)
    aws = Aws(settings)
    bucket = bucket_name(cid, "us-west-2")
    from stamen.customers.model import NewCustomer

    new = NewCustomer.create(
        customer_name="Theta",
        customer_id=cid,
        email="a@theta.example",
        max_concurrent_worksets=4,
        max_storage_gb=5,
    )
    async with pool.acquire() as conn:
        repo = CustomerRepository(conn)
        await repo.insert_onboarding(new, s3_bucket=bucket, region="us-west-2")
        await repo.record_resource(cid, "s3_bucket", bucket, state="pending")
    aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})

    result = await manager.onboard_customer(
        customer_name="Theta",
        customer_id=cid,
        email="a@theta.example",
        max_concurrent_worksets=4,
        max_storage_gb=5,
    )
    assert result.created and result.customer.status == "active"
    assert aws.s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert len(await outbox_events(pool)) == 1


async def test_abandon_onboarding_deletes_what_a_crashed_run_made(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    cid = unique("iota")
    manager = AsyncCustomerManager(pool, settings)
    aws = Aws(settings)
    bucket = bucket_name(cid, "us-west-2")
    from stamen.customers.model import NewCustomer

    new = NewCustomer.create(
        customer_name="Iota",
        customer_id=cid,
        email="a@iota.example",
        max_concurrent_worksets=1,
        max_storage_gb=1,
    )
    async with pool.acquire() as conn:
        repo = CustomerRepository(conn)
        await repo.insert_onboarding(new, s3_bucket=bucket, region="us-west-2")
        await repo.record_resource(cid, "s3_bucket", bucket, state="created")
    aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    aws.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    aws.s3.put_object(Bucket=bucket, Key="results/a.txt", Body=b"1")
    aws.s3.put_object(Bucket=bucket, Key="results/a.txt", Body=b"2")  # two versions to empty

    await manager.abandon_onboarding(cid)
    assert not aws.bucket_exists(bucket)
    assert await table_rows(pool, "customers") == []


async def test_invalid_requests_are_refused_before_anything_is_made(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    manager = AsyncCustomerManager(pool, settings)
    for kwargs in (
        {"customer_name": "Ok", "email": "not-an-email"},
        {"customer_name": "Ok", "email": "a@b.example", "customer_id": "Bad Id"},
        {"customer_name": "Ok", "email": "a@b.example", "max_concurrent_worksets": -1},
        {"customer_name": "Ok", "email": "a@b.example", "cost_center": "no<tags>"},
        {"customer_name": "!!!", "email": "a@b.example"},
    ):
        with pytest.raises(InvalidCustomer) as err:
            await manager.onboard_customer(**kwargs)
        assert err.value.code == "CUSTOMER_INVALID"
    assert await table_rows(pool, "customers") == []


def test_sync_facade_onboards(moto_endpoint: str, database_url: str) -> None:
    settings = customer_settings(moto_endpoint)
    manager = CustomerManager(
        region="us-west-2", database_url=database_url, aws_endpoint_url=moto_endpoint, settings=settings
    )
    cid = unique("kappa")
    result = manager.onboard_customer(
        customer_name="Kappa Labs",
        customer_id=cid,
        email="k@kappa.example",
        max_concurrent_worksets=5,
        max_storage_gb=100,
    )
    assert result.created and result.customer.max_concurrent_worksets == 5
    assert manager.get_customer(cid) == result.customer
    again = manager.onboard_customer(
        customer_name="Kappa Labs",
        customer_id=cid,
        email="k@kappa.example",
        max_concurrent_worksets=5,
        max_storage_gb=100,
    )
    assert not again.created and again.customer == result.customer


async def test_input_cognito_refuses_is_invalid_and_rolled_back(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    # Passes our address check, but Cognito (moto, like AWS) takes no such username: the bucket and topic
    # made before the user step are deleted, and the request is answered as invalid, not as an AWS outage.
    cid = unique("iota")
    with pytest.raises(InvalidCustomer) as err:
        await AsyncCustomerManager(pool, settings).onboard_customer(
            customer_name="Iota", customer_id=cid, email="0@0.0", max_concurrent_worksets=1, max_storage_gb=1
        )
    assert err.value.code == "CUSTOMER_INVALID" and err.value.details["cause"] == "AUTH_REQUEST_INVALID"
    assert "rolled back" in str(err.value) and "Username should be either an email" in str(err.value)
    await assert_nothing_left(pool, Aws(settings), cid, "0@0.0")


async def test_text_the_database_cannot_store_is_refused_before_anything_is_made(
    pool: asyncpg.Pool, settings: CustomerSettings
) -> None:
    manager = AsyncCustomerManager(pool, settings)
    for kwargs, field in (
        ({"customer_name": "Nul\x00Labs", "email": "a@b.example"}, "customer_name"),
        ({"customer_name": "Ok Labs", "email": "a\x07@b.example"}, "email"),
        ({"customer_name": "Half \ud83c surrogate", "email": "a@b.example"}, "customer_name"),
    ):
        with pytest.raises(InvalidCustomer) as err:
            await manager.onboard_customer(**kwargs)
        assert err.value.details["field"] == field and "control characters" in str(err.value)
    assert await table_rows(pool, "customers") == []


def _write_stack(state_dir: Path, **doc: Any) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "stack.json").write_text(json.dumps(doc))


def _without_configuration(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    """No database or AWS endpoint in the environment, and no AWS credentials anywhere."""
    for name in (
        "DATABASE_URL",
        "STAMEN_DATABASE_URL",
        "AWS_ENDPOINT_URL",
        "STAMEN_AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "STAMEN_COGNITO_CREATE_POOL",
        "STAMEN_COGNITO_USER_POOL_ID",
        "STAMEN_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(state_dir / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(state_dir / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("STAMEN_STATE_DIR", str(state_dir))


def test_the_briefs_call_uses_the_running_embedded_stack(
    moto_endpoint: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    _without_configuration(monkeypatch, state_dir)
    _write_stack(
        state_dir,
        launcher_pid=os.getpid(),
        database_url=database_url,
        aws_endpoint_url=moto_endpoint,
        embedded=["postgres", "moto", "nats"],
        nats_url="nats://127.0.0.1:1",
    )
    name = f"Acme Genomics {uuid.uuid4().hex[:6]}"  # the brief's call, with a name no other test uses

    result = CustomerManager(region="us-west-2").onboard_customer(
        customer_name=name, email="lab-admin@acme.example", max_concurrent_worksets=5, max_storage_gb=1000
    )

    customer = result.customer
    assert (
        result.created and customer.status == "active" and customer.customer_id.startswith("acme-genomics-")
    )
    assert (customer.max_concurrent_worksets, customer.max_storage_gb) == (5, 1000)
    aws = boto3.client(
        "s3",
        region_name="us-west-2",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # Made in the stack's moto, and recorded in the stack's database.
    assert aws.get_bucket_versioning(Bucket=customer.s3_bucket)["Status"] == "Enabled"
    assert CustomerManager(state_dir=state_dir).get_customer(customer.customer_id) == customer
    stamped = CustomerManager().resolved_settings()
    assert stamped.aws_emulator_credentials and stamped.cognito_create_pool
    assert (stamped.database_url, stamped.aws_endpoint_url) == (database_url, moto_endpoint)


def test_without_a_database_or_a_running_stack_the_error_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    _without_configuration(monkeypatch, state_dir)
    for stack in (None, {"launcher_pid": None, "database_url": "postgresql://stopped/x", "embedded": []}):
        if stack is not None:
            _write_stack(state_dir, **stack)  # a stack that was stopped does not count
        with pytest.raises(NotConfigured) as err:
            CustomerManager(region="us-west-2").onboard_customer(customer_name="Zeta", email="z@zeta.example")
        message = str(err.value)
        assert err.value.code == "CUSTOMER_NOT_CONFIGURED"
        assert "set DATABASE_URL" in message and "AWS_ENDPOINT_URL" in message and "stamen up" in message
        assert str(state_dir.resolve() / "stack.json") in message and "STAMEN_STATE_DIR" in message
    # An explicit database wins over the stack file: nothing is read from it.
    explicit = CustomerManager(database_url="postgresql://explicit/db").resolved_settings()
    assert explicit.database_url == "postgresql://explicit/db" and explicit.aws_endpoint_url is None
