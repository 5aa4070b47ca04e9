"""The lean ranged GET and HEAD (stamen.inputs.s3_get): signed by botocore's signer, checked on the wire by
a server that signs what it received with botocore (the URL's quoting and the headers as aiohttp sends them); the S3 adapter asks botocore first for each
bucket, then reads without it, with the same answers, and gives back to botocore whatever is not a success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import aiohttp
import botocore.auth
import pytest
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from stamen.inputs import IntakeSettings, open_object_store
from stamen.inputs.objects import BucketMissing, ObjectMissing, S3ObjectStore, StorageError
from stamen.inputs.s3_get import BucketAddress, lean_request, object_path
from stamen.settings import Settings
from tests.intake.s3kit import S3Lab

KEYS = ["reads/B1_R1.fastq.gz", "runs/NA12878 &<b>+x~y%z/ü_R2.fq.gz", "a//b/../c"]


def botocores_authorization(
    url: str, headers: dict[str, str], token: str | None, at: datetime, method: str = "GET"
) -> str:
    """What botocore's own S3 signer makes of the request, at the same time."""
    request = AWSRequest(method=method, url=url, headers=headers)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at.replace(tzinfo=None)):
        S3SigV4Auth(ReadOnlyCredentials("AKID", "SECRET", token), "s3", "eu-west-1").add_auth(request)
    return str(request.headers["Authorization"])


@pytest.fixture
async def verifying_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that answers 206 only when the request it received, as it received it (raw path, headers),
    carries the signature botocore computes for it; it notes each path."""
    paths: list[str] = []

    async def get(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        signed = request.headers["x-amz-date"]
        at = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        names = ["Range", "X-Amz-Content-SHA256", "X-Amz-Security-Token"]
        expected = botocores_authorization(
            f"http://{request.host}{request.raw_path}",
            {name: request.headers[name] for name in names if name in request.headers},
            request.headers.get("x-amz-security-token"),
            at,
            request.method,
        )
        if request.headers.get("authorization") != expected:
            return web.Response(status=403, text="SignatureDoesNotMatch")
        return web.Response(status=206, body=b"@r1\n", headers={"Content-Range": "bytes 0-3/1000"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", paths
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("token", [None, "SESSION-TOKEN"])
async def test_the_signature_holds_for_the_request_as_it_goes_on_the_wire(
    verifying_server: tuple[str, list[str]], token: str | None
) -> None:
    url, paths = verifying_server
    address = BucketAddress(f"{url}/lab-bucket/", "eu-west-1")
    credentials = ReadOnlyCredentials("AKID", "SECRET", token)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for key in KEYS:
            got = await lean_request(http, "GET", address, key, "bytes=0-3", credentials)
            assert (got.status, got.body) == (206, b"@r1\n"), key
            got = await lean_request(http, "HEAD", address, key, None, credentials)
            assert got.status == 206, key
    # Sent as quoted here (aiohttp neither re-quoted nor normalised "a//b/../c").
    assert paths == ["/lab-bucket/" + object_path(key) for key in KEYS for _ in ("GET", "HEAD")]


def test_an_address_is_learned_only_from_a_plain_signed_get_of_the_bucket() -> None:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKID/20261206/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=x"
    )
    key = KEYS[1]
    path_style = f"http://127.0.0.1:5000/lab-bucket/{object_path(key)}"
    hosted = f"https://lab-bucket.s3.eu-west-1.amazonaws.com/{object_path(key)}"
    assert BucketAddress.learned(path_style, auth, bucket="lab-bucket", key=key) == BucketAddress(
        "http://127.0.0.1:5000/lab-bucket/", "eu-west-1"
    )
    assert BucketAddress.learned(hosted, auth, bucket="lab-bucket", key=key) == BucketAddress(
        "https://lab-bucket.s3.eu-west-1.amazonaws.com/", "eu-west-1"
    )
    # Another bucket's URL, another key, a query string, no SigV4 for S3: nothing learned.
    assert BucketAddress.learned(path_style, auth, bucket="other-bucket", key=key) is None
    assert BucketAddress.learned(hosted, auth, bucket="lab", key=key) is None
    assert BucketAddress.learned(path_style, auth, bucket="lab-bucket", key="reads/x") is None
    assert BucketAddress.learned(path_style + "?versionId=1", auth, bucket="lab-bucket", key=key) is None
    assert BucketAddress.learned(path_style, None, bucket="lab-bucket", key=key) is None
    assert BucketAddress.learned(path_style, "AWS AKID:sig", bucket="lab-bucket", key=key) is None
    sqs = auth.replace("/s3/", "/sqs/")
    assert BucketAddress.learned(path_style, sqs, bucket="lab-bucket", key=key) is None


async def test_the_store_asks_botocore_once_per_bucket_then_reads_alike_without_it(s3lab: S3Lab) -> None:
    body = b"@r1\nACGT\n+\nIIII\n" * 100
    keys = ["reads/a_R1.fastq", "reads/b c+&ü_R2.fastq"]
    for key in keys:
        s3lab.put(key, body)
    s3lab.client.put_object(
        Bucket=s3lab.bucket, Key="reads/archived.fastq", Body=body, StorageClass="GLACIER"
    )
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2")
    sent: list[str] = []
    async with open_object_store(settings, IntakeSettings()) as store:
        plain = S3ObjectStore(store.client)  # botocore for every call, as before

        def counted(request: Any, **_: Any) -> None:
            sent.append(str(request.url))

        store.client.meta.events.register("before-send.s3.GetObject", counted)
        first = [await store.read_start(s3lab.bucket, key, 64) for key in keys]
        through_botocore = len(sent)
        again = [await store.read_start(s3lab.bucket, key, 64) for key in keys]
        lean = len(sent) - through_botocore
        expected = [await plain.read_start(s3lab.bucket, key, 64) for key in keys]
        # Not a success: botocore's answer, as before (the lean GET's failure is given back to it).
        with pytest.raises(ObjectMissing):
            await store.read_start(s3lab.bucket, "reads/missing.fastq", 64)
        with pytest.raises(BucketMissing):
            await store.read_start(s3lab.bucket + "-gone", "reads/a_R1.fastq", 64)
        with pytest.raises(StorageError) as archived:
            await plain.read_start(s3lab.bucket, "reads/archived.fastq", 64)
        with pytest.raises(type(archived.value)):
            await store.read_start(s3lab.bucket, "reads/archived.fastq", 64)
    assert through_botocore == 1 and lean == 0
    assert first == again == expected
    assert first[1][1] == body[:64] and first[1][0].size == len(body)


async def test_heads_too_ask_botocore_once_per_bucket_then_answer_alike_without_it(s3lab: S3Lab) -> None:
    """The reference files' probes: eight HEADs per validation where STAMEN_REFERENCE_LOCATION is set."""
    keys = ["refs/hg38/genome.fa", "refs/hg38/genome.fa.fai", "refs/hg38/genome dict+ü.dict"]
    for i, key in enumerate(keys):
        s3lab.put(key, b">chr1\nACGT\n" * (i + 1))
    s3lab.client.put_object(Bucket=s3lab.bucket, Key="refs/old.fa", Body=b">x\n", StorageClass="GLACIER")
    settings = Settings(AWS_ENDPOINT_URL=s3lab.url, AWS_REGION="us-west-2")
    sent: list[str] = []
    async with open_object_store(settings, IntakeSettings()) as store:
        plain = S3ObjectStore(store.client)

        def counted(request: Any, **_: Any) -> None:
            sent.append(str(request.url))

        store.client.meta.events.register("before-send.s3.HeadObject", counted)
        ours = [await store.head(s3lab.bucket, key) for key in [*keys, "refs/old.fa"]]
        through_botocore = len(sent)
        expected = [await plain.head(s3lab.bucket, key) for key in [*keys, "refs/old.fa"]]
        asked = len(sent) - through_botocore
        with pytest.raises(ObjectMissing):
            await store.head(s3lab.bucket, "refs/hg38/missing.fa")
        with pytest.raises(BucketMissing):
            await store.head(s3lab.bucket + "-gone", "refs/hg38/genome.fa")
    assert through_botocore == 1 and asked == 4
    assert ours == expected and ours[3].storage_class == "GLACIER"
    assert [info.size for info in ours[:3]] == [11, 22, 33]
