"""AWS adapter of onboarding (aioboto3): the customer's bucket, topic and admin user, made and unmade.

Every delete is idempotent (already gone is fine), so a rollback or a re-run after a crash can repeat it.
The endpoint comes from AWS_ENDPOINT_URL (moto in the embedded stack and the tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from botocore.exceptions import ClientError

from stamen.auth import cognito
from stamen.aws_clients import client_config
from stamen.customers.settings import CustomerSettings


def _code(error: ClientError) -> str:
    return cognito.aws_code(error)


@dataclass
class AwsClients:
    s3: Any
    sns: Any
    cognito: Any


@asynccontextmanager
async def open_clients(settings: CustomerSettings) -> AsyncIterator[AwsClients]:
    session = (
        aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        if settings.aws_emulator_credentials
        else aioboto3.Session()
    )
    endpoint = settings.aws_endpoint_url
    async with AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(
            session.client("s3", region_name=settings.region, endpoint_url=endpoint, config=client_config())
        )
        sns = await stack.enter_async_context(
            session.client("sns", region_name=settings.region, endpoint_url=endpoint, config=client_config())
        )
        idp = await stack.enter_async_context(
            session.client(
                "cognito-idp",
                region_name=settings.resolved_cognito_region(),
                endpoint_url=endpoint,
                config=client_config(),
            )
        )
        yield AwsClients(s3=s3, sns=sns, cognito=idp)


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


# --- S3 -----------------------------------------------------------------------------------------------
async def bucket_exists(s3: Any, bucket: str) -> bool:
    """True also for a bucket of another account (403): the name is taken either way."""
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if _code(exc) in ("403", "AccessDenied"):
            return True
        raise
    return True


async def create_bucket(s3: Any, bucket: str, *, region: str) -> None:
    """Create the bucket; an existing one of ours is fine (the caller decides whether it is *its* own)."""
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await s3.create_bucket(**kwargs)
    except ClientError as exc:
        if _code(exc) != "BucketAlreadyOwnedByYou":
            raise


async def configure_bucket(
    s3: Any, bucket: str, *, tags: dict[str, str], lifecycle_rules: list[dict[str, Any]]
) -> None:
    """Versioning, lifecycle rules, cost-allocation tags, no public access. Each call is idempotent."""
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    await s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules}
    )
    await s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tag_list(tags)})
    await s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


async def delete_bucket(s3: Any, bucket: str) -> None:
    """Empty the bucket (every version and delete marker) and delete it. Gone already is fine."""
    try:
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=bucket):
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(doomed), 1000):
                await s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
                )
        await s3.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) not in ("NoSuchBucket", "404"):
            raise


async def bucket_bytes(s3: Any, bucket: str, prefix: str = "") -> int:
    """Measured storage: the sum of current object sizes (list_objects_v2, paginated)."""
    total = 0
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        total += sum(int(o.get("Size", 0)) for o in page.get("Contents", []))
    return total


# --- SNS ----------------------------------------------------------------------------------------------
async def find_topic(sns: Any, name: str) -> str | None:
    paginator = sns.get_paginator("list_topics")
    async for page in paginator.paginate():
        for topic in page.get("Topics", []):
            arn = str(topic["TopicArn"])
            if arn.rsplit(":", 1)[-1] == name:
                return arn
    return None


async def create_topic(sns: Any, name: str, *, tags: dict[str, str]) -> str:
    """CreateTopic is idempotent in SNS (same name, same ARN)."""
    answer = await sns.create_topic(Name=name, Tags=_tag_list(tags))
    return str(answer["TopicArn"])


async def delete_topic(sns: Any, arn: str) -> None:
    try:
        await sns.delete_topic(TopicArn=arn)
    except ClientError as exc:
        if _code(exc) not in ("NotFound", "NotFoundException"):
            raise
