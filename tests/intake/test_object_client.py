"""The S3 adapter's client: dates read without botocore's general parser (the same values, timezone-aware),
a User-Agent fixed once instead of rebuilt per request, and checksums asked for where S3 has them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.utils import parse_timestamp
from botocore.validate import ParamValidationDecorator

from stamen.inputs import IntakeSettings, open_object_store
from stamen.inputs.objects import USER_AGENT, StorageError, parse_s3_timestamp
from stamen.settings import Settings
from tests.intake.s3kit import S3Lab


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Dec 2026 12:41:44 GMT",  # a GET's or HEAD's Last-Modified header
        "2026-12-06T12:41:44.000Z",  # a listing's LastModified
        "2026-12-06T12:41:44+01:00",
        "1796561304",  # seconds since the epoch: botocore's parser reads it
        "Sun, 06 Dec 2026 12:41:44 -0000",  # RFC 2822's unknown zone: left to botocore's parser
    ],
)
def test_an_s3_date_reads_as_botocore_reads_it(text: str) -> None:
    ours, theirs = parse_s3_timestamp(text), parse_timestamp(text)
    assert ours == theirs and ours.tzinfo is not None and ours.utcoffset() == theirs.utcoffset()


def test_a_date_that_is_no_date_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("not a date")
    with pytest.raises(ValueError):
        parse_s3_timestamp("not a date")


async def test_the_adapter_reads_an_objects_date_alike_from_a_get_a_head_and_a_listing(s3lab: S3Lab) -> None:
    s3lab.put("reads/a.txt", b"hello")
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2")
    async with open_object_store(settings, IntakeSettings()) as store:
        got, _ = await store.read_start(s3lab.bucket, "reads/a.txt", 4)
        head = await store.head(s3lab.bucket, "reads/a.txt")
        [listed] = await store.list_objects(s3lab.bucket, "reads/")
        assert store.client.meta.config.user_agent.startswith(USER_AGENT)
    assert got.last_modified == head.last_modified == listed.last_modified.replace(microsecond=0)
    assert abs(got.last_modified - datetime.now(UTC)).total_seconds() < 3600


async def test_only_reads_of_whole_objects_ask_for_a_checksum_and_botocore_checks_it(s3lab: S3Lab) -> None:
    """S3 has no checksum for a ranged GET (the sniff's first bytes, a gzip's end): the client no longer asks
    for one there (was botocore's default for every GET). A whole object's read still asks for it, and
    botocore checks the body against the one S3 gives."""
    body = b"@r1\nACGT\n+\nIIII\n" * 10
    s3lab.client.put_object(Bucket=s3lab.bucket, Key="reads/a.fastq", Body=body, ChecksumAlgorithm="CRC32")
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2")
    asked: list[str | None] = []
    checked: list[str | None] = []
    async with open_object_store(settings, IntakeSettings()) as store:

        def sent(params: dict[str, Any], **_: Any) -> None:
            asked.append(params.get("ChecksumMode"))

        def received(response_dict: dict[str, Any], **_: Any) -> None:
            # Set when botocore wrapped the body in its check of the checksum S3 sent.
            checked.append(response_dict["context"].get("checksum", {}).get("response_algorithm"))

        store.client.meta.events.register("before-parameter-build.s3.GetObject", sent)
        store.client.meta.events.register("before-parse.s3.GetObject", received)
        _, start = await store.read_start(s3lab.bucket, "reads/a.fastq", 8)
        tail = await store.read(s3lab.bucket, "reads/a.fastq", offset=len(body) - 8, length=8)
        whole = await store.read(s3lab.bucket, "reads/a.fastq")
        streamed = b"".join([chunk async for chunk in store.stream(s3lab.bucket, "reads/a.fastq")])
        # Our own parameters are not checked against the API model per request (a serializer without it).
        assert not isinstance(store.client._serializer, ParamValidationDecorator)
    assert (start, tail, whole, streamed) == (body[:8], body[-8:], body, body)
    assert asked == [None, None, "ENABLED", "ENABLED"]
    assert checked == [None, None, "crc32", "crc32"]


async def test_two_replicas_making_the_same_bucket_at_once_both_have_it(s3lab: S3Lab) -> None:
    """Two validators seed the demo bucket at start-up: the one that creates it second is told the bucket
    is already its own (BucketAlreadyOwnedByYou). It had asked S3 before creating it (no such bucket, kept):
    it asks again instead of reporting the failure from what it had kept."""
    bucket = f"race-{uuid.uuid4().hex[:8]}"
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2")
    async with (
        open_object_store(settings, IntakeSettings()) as first,
        open_object_store(settings, IntakeSettings()) as second,
    ):
        with pytest.raises(StorageError):
            await second.head(bucket, "any")  # looks before the other creates it: no such bucket, kept
        await first.ensure_bucket(bucket)
        await second.ensure_bucket(bucket)  # was: StorageError (CreateBucket: BucketAlreadyOwnedByYou)
    assert bucket in {b["Name"] for b in s3lab.client.list_buckets()["Buckets"]}
