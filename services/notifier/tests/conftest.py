"""Fixtures of the notifier's tests: moto (SNS, SQS, Secrets Manager), settings with short timers, a
tenant with its topic, the webhook receiver, the Linear stand-in, and a delivery worker in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aioboto3  # type: ignore[import-untyped]  # aioboto3 ships no type information
import asyncpg
import pytest

from services.notifier.channels import open_channels
from services.notifier.tests.support import FakeLinear, WebhookReceiver, add_customer
from services.notifier.worker import DeliveryWorker
from stamen.notifications.preferences import Channel
from stamen.notifications.settings import NotifySettings
from tests.customers.awskit import moto_endpoint

__all__ = ["moto_endpoint"]
WEBHOOK_SECRET = "whsec-for-the-tests-0123456789"
LINEAR_KEY = "lin_api_test_key_0123456789"


def fast_settings(moto: str, **overrides: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "aws_endpoint_url": moto,
        "aws_region": "us-west-2",
        "backoff_initial_seconds": 0.05,
        "backoff_cap_seconds": 0.3,
        "max_attempts": 6,
        "send_timeout_seconds": 1.0,
        "lease_seconds": 3.0,
        "poll_seconds": 0.2,
        "webhook_allow_http": True,
        "webhook_allow_private": True,
        "secret_cache_seconds": 0,
        "slack_burst": 100,
        "slack_per_second": 100,
    }
    return NotifySettings.model_validate(values | overrides)


@pytest.fixture
def notify_settings(moto_endpoint: str) -> NotifySettings:
    return fast_settings(moto_endpoint)


@pytest.fixture
async def tenant(pool: asyncpg.Pool, moto_endpoint: str) -> str:
    """A customer with its own SNS topic in moto."""
    name = f"lab-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client("sns", region_name="us-west-2", endpoint_url=moto_endpoint) as sns:
        topic = (await sns.create_topic(Name=f"stamen-{name}-events"))["TopicArn"]
    await add_customer(pool, name, topic)
    return name


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(WEBHOOK_SECRET).start()
    yield r
    if r.hold is not None:
        r.hold.set()
    await r.stop()


@pytest.fixture
async def linear() -> AsyncIterator[FakeLinear]:
    fake = await FakeLinear(LINEAR_KEY).start()
    yield fake
    await fake.stop()


WorkerFactory = Callable[..., AbstractAsyncContextManager[DeliveryWorker]]


@pytest.fixture
def running_worker(pool: asyncpg.Pool) -> WorkerFactory:
    @asynccontextmanager
    async def run(
        settings: NotifySettings, only: set[Channel] | None = None
    ) -> AsyncIterator[DeliveryWorker]:
        async with open_channels(settings) as channels:
            chosen = {c: a for c, a in channels.items() if only is None or c in only}
            worker = DeliveryWorker(pool, chosen, settings, region="us-west-2")
            await worker.start()
            try:
                yield worker
            finally:
                await worker.stop(2)

    return run
