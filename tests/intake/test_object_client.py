"""The S3 adapter's client: dates read without botocore's general parser (the same values, timezone-aware),
and a User-Agent fixed once instead of rebuilt per request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.utils import parse_timestamp

from stamen.inputs import IntakeSettings, open_object_store
from stamen.inputs.objects import USER_AGENT, parse_s3_timestamp
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
