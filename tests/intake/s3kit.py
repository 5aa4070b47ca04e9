"""A real moto S3 server for intake tests, and helpers to lay out worksets in it.

Shared with services/validator/tests and services/portal/tests, whose conftests import these fixtures.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest
import yaml

from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings
from stamen.stack.servers import MotoServer
from stamen.tenancy import BucketGrantRepository, GrantAccess
from tests.worksets.conftest import fastq_records, gz

DROP_PREFIX = "daylily_monitoring/active_worksets/"


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # moto accepts any credentials; these keep botocore from looking for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server.url
    finally:
        server.stop()


class S3Lab:
    """A fresh bucket per test on the shared moto server."""

    def __init__(self, url: str, region: str = "us-west-2") -> None:
        self.url = url
        self.client: Any = boto3.client("s3", endpoint_url=url, region_name=region)
        self.bucket = self.new_bucket(region)

    def new_bucket(self, region: str = "us-west-2", name: str | None = None) -> str:
        bucket = name or f"lab-{uuid.uuid4().hex[:12]}"
        client: Any = boto3.client("s3", endpoint_url=self.url, region_name=region)
        config = (
            {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        client.create_bucket(Bucket=bucket, **config)
        return bucket

    def put(self, key: str, body: bytes | str, bucket: str | None = None) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.client.put_object(Bucket=bucket or self.bucket, Key=key, Body=data)
        return f"s3://{bucket or self.bucket}/{key}"

    def get(self, key: str, bucket: str | None = None) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket or self.bucket, Key=key)["Body"].read()
        return body

    def exists(self, key: str, bucket: str | None = None) -> bool:
        listing = self.client.list_objects_v2(Bucket=bucket or self.bucket, Prefix=key)
        return any(o["Key"] == key for o in listing.get("Contents", []))

    def reads(self, sample: str, *, count: int = 50, bucket: str | None = None) -> tuple[str, str]:
        """A good gzip FASTQ pair; returns the R1 and R2 URIs."""
        r1 = self.put(f"reads/{sample}_R1.fastq.gz", gz(fastq_records(count, mate=1)), bucket)
        r2 = self.put(f"reads/{sample}_R2.fastq.gz", gz(fastq_records(count, mate=2)), bucket)
        return r1, r2

    def spec(self, name: str = "wgs-batch-7", *, samples: int = 1, **overrides: Any) -> dict[str, Any]:
        """A valid form spec whose inputs exist in this bucket."""
        rows = []
        for i in range(samples):
            r1, r2 = self.reads(f"S{i + 1}")
            rows.append({"id": f"S{i + 1}", "platform": "ILLUMINA", "r1": r1, "r2": r2})
        return {
            "name": name,
            "pipeline": "fastq-qc",
            "reference_genome": "GRCh38",
            "samples": rows,
            "export_uri": f"s3://{self.bucket}/results/{name}/",
            **overrides,
        }

    def drop_folder(
        self, name: str, *, work: str | None = None, ready: bool = True, info: dict[str, Any] | None = None
    ) -> str:
        """A Daylily workset folder in the drop prefix; returns its prefix (ending in '/')."""
        folder = f"{DROP_PREFIX}{name}/"
        r1, r2 = self.reads(name)
        manifest = (
            "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tLANE\tSEQ_VENDOR\tSEQ_PLATFORM\tILMN_R1_FQ\tILMN_R2_FQ\n"
            f"R1\t{name}-S1\tEX1\t1\tILMN\tNOVASEQX\t{r1}\t{r2}\n"
        )
        self.put(
            folder + "daylily_work.yaml",
            work
            if work is not None
            else yaml.safe_dump({"dy-r": "-p help", "export_uri": f"s3://{self.bucket}/results/{name}/"}),
        )
        self.put(folder + "stage_samples.tsv", manifest)
        self.put(
            folder + "daylily_info.yaml",
            yaml.safe_dump(info or {"pipeline_type": "fastq-qc", "reference_genome": "GRCh38"}),
        )
        if ready:
            self.put(folder + "daylily.ready", "2025-01-01T00:00:00Z")
        return folder


@pytest.fixture
def s3lab(moto_url: str) -> S3Lab:
    return S3Lab(moto_url)


@dataclass
class GuardedS3:
    """A moto server of its own that can be switched to enforcing IAM (the shared one never is), and an
    IAM user for the code under test. Set up buckets and objects first, then `deny_get_object`."""

    url: str
    user_key_id: str
    user_secret: str

    def deny_get_object(self, uri: str) -> None:
        """The user may do anything in S3 except read this object; from now on moto checks every call."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/{key}"},
            ],
        }
        iam: Any = boto3.client("iam", endpoint_url=self.url, region_name="us-east-1")
        iam.put_user_policy(UserName="validator", PolicyName="lab-reads", PolicyDocument=json.dumps(policy))
        # moto's switch: authenticate and authorise every request after the next 0 ones.
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200


@pytest.fixture
def guarded_s3(tmp_path: Path, moto_url: str) -> Iterator[GuardedS3]:
    server = MotoServer(tmp_path / "guarded-moto").start()  # moto_url: only for its credentials setup
    try:
        iam: Any = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1")
        iam.create_user(UserName="validator")
        key = iam.create_access_key(UserName="validator")["AccessKey"]
        yield GuardedS3(server.url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()


async def grant(pool: asyncpg.Pool, tenant: str, bucket: str, access: GrantAccess = "read-write") -> None:
    """Let `tenant` use `bucket` (stamen.tenancy): what an operator's `stamen bucket grant` does."""
    async with pool.acquire() as conn:
        await BucketGrantRepository(conn).grant(tenant, bucket, access, granted_by="test")


def make_settings(database_url: str, nats_url: str, moto_url: str, **extra: Any) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        NATS_URL=nats_url,
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION="us-west-2",
        region="us-west-2",
        **extra,
    )


def make_intake(s3lab: S3Lab | None = None, **extra: Any) -> IntakeSettings:
    buckets = {"drop_buckets": f"{s3lab.bucket}=acme"} if s3lab is not None else {}
    return IntakeSettings(**{"seed_demo_data": "false", "drop_poll_seconds": 0.5, **buckets, **extra})


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path
