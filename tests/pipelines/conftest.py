"""A real S3 (moto's server) for the pipeline tests, on a free port; clients get its URL explicitly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from stamen.stack.servers import MotoServer

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_url: str) -> dict[str, str]:
    """The environment a step needs to reach the test S3 (passed to the steps, not set globally)."""
    return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": moto_url}


@pytest.fixture
def s3(moto_url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
