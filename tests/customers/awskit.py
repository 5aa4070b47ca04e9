"""A real moto server (S3, SNS, Cognito) for customer and auth tests, and settings pointing at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from stamen.customers.settings import CustomerSettings
from stamen.stack.servers import MotoServer


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # moto accepts any credentials; these keep botocore from looking for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server.url
    finally:
        server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def customer_settings(
    endpoint: str, database_url: str | None = None, **overrides: object
) -> CustomerSettings:
    """Settings for one test: its own Cognito pool (by name) so tests never see each other's users."""
    values: dict[str, object] = {
        "region": "us-west-2",
        "aws_endpoint_url": endpoint,
        "database_url": database_url,
        "cognito_user_pool_name": unique("pool"),
        "cognito_create_pool": True,
    }
    values.update(overrides)
    return CustomerSettings.model_validate(values)
