"""The object-store port and its S3 adapter (aioboto3). Everything else in intake talks to `ObjectStore`.

S3's own errors are translated here into a few exceptions that say what they mean for a workset
(missing, no access, archived, unreachable), so no botocore detail leaks into the checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlparse

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from aiobotocore.session import AioSession  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import parse_timestamp

from stamen.aws_clients import client_config
from stamen.inputs.s3_get import BucketAddress, LeanResponse, lean_request
from stamen.inputs.settings import IntakeSettings
from stamen.settings import Settings


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime
    storage_class: str | None = None


class StorageError(Exception):
    """Base of what a storage call can tell a workset; `code` is the finding code it becomes."""

    code = "SNF-OBJ-006"


class ObjectMissing(StorageError):
    code = "SNF-OBJ-001"


class AccessDenied(StorageError):
    code = "SNF-OBJ-003"


class BucketMissing(StorageError):
    code = "SNF-OBJ-004"


class ObjectArchived(StorageError):
    code = "SNF-OBJ-005"


class RangeNotSatisfiable(StorageError):
    """A ranged GET of an empty object: S3 answers 416, the content is simply empty."""


class StorageUnavailable(StorageError):
    """Throttling, 5xx, timeouts, no network or no credentials: nothing the workset can fix."""

    code = "SNF-OBJ-006"


ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


class ObjectStore(Protocol):
    async def head(self, bucket: str, key: str) -> ObjectInfo: ...

    async def read(self, bucket: str, key: str, *, length: int | None = None, offset: int = 0) -> bytes:
        """`length` bytes from `offset` (to the end when None)."""
        ...

    async def read_start(self, bucket: str, key: str, length: int) -> tuple[ObjectInfo, bytes]:
        """What `head` says and the first `length` bytes, in one call. Raises RangeNotSatisfiable for an
        empty object (there is no first byte to give)."""
        ...

    def stream(self, bucket: str, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """The whole object, in chunks."""
        ...

    async def put(self, bucket: str, key: str, body: bytes, *, content_type: str = "text/plain") -> None: ...

    async def list_folders(self, bucket: str, prefix: str) -> list[str]:
        """Sub-folder prefixes directly under `prefix` (Delimiter='/')."""
        ...

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Objects directly under `prefix` (Delimiter='/': nothing from deeper folders)."""
        ...

    async def bucket_region(self, bucket: str) -> str | None: ...

    async def ensure_bucket(self, bucket: str) -> None: ...


def _status(error: ClientError) -> tuple[str, int]:
    details: Any = error.response
    code = str(details.get("Error", {}).get("Code", ""))
    status = int(details.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _where(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _info_from_headers(key: str, headers: Any) -> ObjectInfo:
    """What a successful GET's or HEAD's headers say of the object, as botocore reads them: a ranged GET's
    Content-Range gives the whole size."""
    total = str(headers.get("Content-Range") or "").rpartition("/")[2]
    return ObjectInfo(
        key=key,
        size=int(total) if total.isdigit() else int(headers["Content-Length"]),
        etag=str(headers.get("ETag", "")),
        last_modified=parse_s3_timestamp(headers["Last-Modified"]),
        storage_class=headers.get("x-amz-storage-class"),
    )


class S3ObjectStore:
    """`ObjectStore` over an aiobotocore S3 client (opened by `open_object_store`)."""

    # A bucket's region is fixed for its life (only deleting it and creating it again elsewhere changes
    # it): learned answers are kept this long, so a validation asks S3 for its objects only.
    REGION_KEPT_SECONDS = 600.0

    def __init__(
        self, client: Any, *, http: aiohttp.ClientSession | None = None, session: AioSession | None = None
    ) -> None:
        """`http` and `session` (the client's botocore session, for its credentials): ranged GETs and HEADs
        that succeed are then made without botocore's per-request work (stamen.inputs.s3_get)."""
        self._client = client
        self._bucket_exists: dict[str, bool] = {}
        self._regions: dict[str, tuple[float, str]] = {}  # bucket -> (monotonic time learned, region)
        self._http = http
        self._session = session
        self._addresses: dict[str, BucketAddress] = {}  # bucket -> where botocore sent its last GET
        if http is not None:
            for operation in ("GetObject", "HeadObject"):
                client.meta.events.register(f"before-send.s3.{operation}", _note_sent_request)

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client, for adapters that take one (the customers' storage measurement)."""
        return self._client

    async def _call(self, what: str, bucket: str, key: str, operation: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code, status = _status(exc)
            where = _where(bucket, key)
            if code in ("NoSuchBucket",):
                raise BucketMissing(f"bucket {bucket} does not exist") from None
            if code in ("NoSuchKey", "NotFound", "404") or status == 404:
                if key and not await self._bucket_is_there(bucket):
                    raise BucketMissing(f"bucket {bucket} does not exist") from None
                raise ObjectMissing(f"{where} does not exist") from None
            if code in ("AccessDenied", "Forbidden", "403", "AllAccessDisabled") or status == 403:
                raise AccessDenied(f"{what} {where}: access denied") from None
            if code == "InvalidRange" or status == 416:
                raise RangeNotSatisfiable(f"{where} is shorter than the requested range") from None
            if code == "InvalidObjectState":
                raise ObjectArchived(f"{where} is archived and must be restored first") from None
            raise StorageUnavailable(f"{what} {where} failed: {code or status}") from None
        except (BotoCoreError, TimeoutError, OSError) as exc:
            raise StorageUnavailable(f"{what} {_where(bucket, key)} failed: {exc}") from None

    async def _bucket_is_there(self, bucket: str) -> bool:
        # HEAD says 404 for a missing key and a missing bucket alike; one HEAD bucket (cached) tells them apart.
        if bucket not in self._bucket_exists:
            try:
                await self._client.head_bucket(Bucket=bucket)
                self._bucket_exists[bucket] = True
            except ClientError as exc:
                code, status = _status(exc)
                self._bucket_exists[bucket] = not (
                    status == 404 or code in ("NoSuchBucket", "404", "NotFound")
                )
            except (BotoCoreError, TimeoutError, OSError):
                return True  # unknown: report the object, not the bucket, as missing
        return self._bucket_exists[bucket]

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        lean = await self._lean("HEAD", bucket, key, None)
        if lean is not None and lean.status == 200:
            try:
                return _info_from_headers(key, lean.headers)
            except (KeyError, ValueError):
                pass  # not what S3 says: botocore's answer
        head = await self._learning("HEAD", bucket, key, "head_object", Bucket=bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            etag=str(head.get("ETag", "")),
            last_modified=head["LastModified"],
            storage_class=head.get("StorageClass"),
        )

    async def read_start(self, bucket: str, key: str, length: int) -> tuple[ObjectInfo, bytes]:
        # One ranged GET: its Content-Range gives the whole size, its headers the class, ETag and date.
        range_header = f"bytes=0-{length - 1}"
        lean = await self._lean("GET", bucket, key, range_header)
        if lean is not None and lean.status in (200, 206):
            try:
                return _info_from_headers(key, lean.headers), lean.body[:length]
            except (KeyError, ValueError):
                pass  # not what S3 says: botocore's answer
        response = await self._learning(
            "GET", bucket, key, "get_object", Bucket=bucket, Key=key, Range=range_header
        )
        data = await self._body(bucket, key, response)
        total = str(response.get("ContentRange") or "").rpartition("/")[2]
        info = ObjectInfo(
            key=key,
            size=int(total) if total.isdigit() else int(response["ContentLength"]),
            etag=str(response.get("ETag", "")),
            last_modified=response["LastModified"],
            storage_class=response.get("StorageClass"),
        )
        return info, data[:length]

    async def _learning(self, what: str, bucket: str, key: str, operation: str, **kwargs: Any) -> Any:
        """`_call`, learning from the request botocore sent where the bucket's objects are (s3_get)."""
        sent = _SENT_REQUESTS.set([])
        try:
            response = await self._call(what, bucket, key, operation, **kwargs)
            learned = _SENT_REQUESTS.get()
        finally:
            _SENT_REQUESTS.reset(sent)
        if learned and self._http is not None:
            # The request that answered (after any retry or redirect to the bucket's region) is the last one.
            address = BucketAddress.learned(*learned[-1], bucket=bucket, key=key)
            if address is not None:
                self._addresses[bucket] = address
        return response

    async def _lean(
        self, method: str, bucket: str, key: str, range_header: str | None
    ) -> LeanResponse | None:
        """The GET or HEAD without botocore (stamen.inputs.s3_get); None (the caller asks botocore, whose
        retries and reading of errors apply) when this bucket's address is not learned yet, there are no
        credentials or the connection fails. The caller takes its answer only when it is a success."""
        address = self._addresses.get(bucket)
        if address is None or self._http is None or self._session is None:
            return None
        try:
            found = await self._session.get_credentials()
            if found is None:
                return None
            frozen = await found.get_frozen_credentials()
            return await lean_request(
                self._http,
                method,
                address,
                key,
                range_header,
                frozen,
            )
        except (aiohttp.ClientError, BotoCoreError, TimeoutError, OSError, ValueError):
            return None

    @staticmethod
    async def _body(bucket: str, key: str, response: Any) -> bytes:
        try:
            async with response["Body"] as body:
                data: bytes = await body.read()
        except (BotoCoreError, TimeoutError, OSError) as exc:
            raise StorageUnavailable(f"GET {_where(bucket, key)} failed while reading: {exc}") from None
        return data

    async def read(self, bucket: str, key: str, *, length: int | None = None, offset: int = 0) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if length is not None:
            kwargs["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            kwargs["Range"] = f"bytes={offset}-"
        else:
            kwargs.update(CHECKSUM_MODE)  # the whole object: its checksum is checked (see LEAN_REQUESTS)
        try:
            response = await self._call("GET", bucket, key, "get_object", **kwargs)
        except RangeNotSatisfiable:
            return b""
        data = await self._body(bucket, key, response)
        return data if length is None else data[:length]

    async def stream(self, bucket: str, key: str, *, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        response = await self._call("GET", bucket, key, "get_object", Bucket=bucket, Key=key, **CHECKSUM_MODE)
        body = response["Body"]
        try:
            while chunk := await body.read(chunk_size):
                yield chunk
        except (BotoCoreError, TimeoutError, OSError) as exc:
            raise StorageUnavailable(f"GET {_where(bucket, key)} failed while reading: {exc}") from None
        finally:
            body.close()

    async def put(self, bucket: str, key: str, body: bytes, *, content_type: str = "text/plain") -> None:
        await self._call(
            "PUT", bucket, key, "put_object", Bucket=bucket, Key=key, Body=body, ContentType=content_type
        )

    async def _pages(self, bucket: str, prefix: str) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call("LIST", bucket, prefix, "list_objects_v2", **kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def list_folders(self, bucket: str, prefix: str) -> list[str]:
        return [
            p["Prefix"] async for page in self._pages(bucket, prefix) for p in page.get("CommonPrefixes", [])
        ]

    async def list_objects(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(
                key=o["Key"],
                size=int(o["Size"]),
                etag=str(o.get("ETag", "")),
                last_modified=o["LastModified"],
                storage_class=o.get("StorageClass"),
            )
            async for page in self._pages(bucket, prefix)
            for o in page.get("Contents", [])
        ]

    async def bucket_region(self, bucket: str) -> str | None:
        known = self._regions.get(bucket)
        if known is not None and time.monotonic() - known[0] < self.REGION_KEPT_SECONDS:
            return known[1]
        try:
            answer = await self._call("GetBucketLocation", bucket, "", "get_bucket_location", Bucket=bucket)
        except StorageError:
            return None  # not kept: asked again next time
        # Buckets in us-east-1 report no constraint; "EU" is the legacy name of eu-west-1.
        constraint = answer.get("LocationConstraint") or "us-east-1"
        region = "eu-west-1" if constraint == "EU" else str(constraint)
        self._regions[bucket] = (time.monotonic(), region)
        return region

    async def ensure_bucket(self, bucket: str) -> None:
        if await self._bucket_is_there(bucket):
            return
        region = self._client.meta.region_name
        config = (
            {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        try:
            await self._call("CreateBucket", bucket, "", "create_bucket", Bucket=bucket, **config)
        except StorageError:
            # Made meanwhile by another process (BucketAlreadyOwnedByYou)? Ask S3, not the "no such bucket"
            # this store kept from before.
            self._bucket_exists.pop(bucket, None)
            if not await self._bucket_is_there(bucket):
                raise
        self._bucket_exists[bucket] = True


# The GetObject and HeadObject requests botocore sends in this task (its last is the one that answered): where a bucket's
# objects are, and the region they are signed for, as botocore's endpoint rules and redirects decided.
_SENT_REQUESTS: ContextVar[list[tuple[str, str | None]] | None] = ContextVar(
    "stamen_s3_sent_requests", default=None
)


def _note_sent_request(request: Any, **_: Any) -> None:
    sent = _SENT_REQUESTS.get()
    if sent is not None:
        authorization = request.headers.get("Authorization")
        if isinstance(authorization, bytes):  # a prepared request's headers are bytes
            authorization = authorization.decode("ascii", "replace")
        sent.append((str(request.url), authorization))


def endpoint_is_loopback(endpoint_url: str | None) -> bool:
    """True for an emulator on this machine (moto from `stamen up`), never for real AWS."""
    if not endpoint_url:
        return False
    host = urlparse(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The User-Agent the S3 client sends (botocore adds its version), fixed once: botocore otherwise rebuilds
# its own (some 90 components, each sanitised) twice per request, ~0.1 ms of a GET's ~1.4 ms of CPU.
USER_AGENT = "stamen"


# What each S3 request skips of botocore's per-request work (together ~0.15 ms of a ranged GET's ~1.4 ms of
# CPU, two GETs per validation):
# - checking our own parameters against the API model (parameter_validation): this module builds every call
#   from strings it has already checked (a bucket's name is still checked, by botocore's hook);
# - asking for and checking a response checksum on every GET (response_checksum_validation
#   "when_supported"): S3 gives none for a ranged GET, which is most of ours; the reads of whole objects
#   still ask for it (CHECKSUM_MODE) and botocore still checks what comes back.
LEAN_REQUESTS: dict[str, Any] = {
    "user_agent": USER_AGENT,
    "parameter_validation": False,
    "response_checksum_validation": "when_required",
}
# Asks S3 for the object's checksum, which botocore then checks against the body as it is read.
CHECKSUM_MODE = {"ChecksumMode": "ENABLED"}


def parse_s3_timestamp(value: str) -> datetime:
    """S3's dates as botocore reads them (timezone-aware), without its general parser (dateutil, ~0.1 ms a
    date: one per GET): a header's RFC 7231 date ('Sun, 06 Dec 2026 12:41:44 GMT'), a listing's ISO 8601
    ('2026-12-06T12:41:44.000Z'); anything else, or a date without a zone, goes to botocore's parser."""
    try:
        parsed = parsedate_to_datetime(value) if value[:1].isalpha() else datetime.fromisoformat(value)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        return parse_timestamp(value)
    return parsed


@asynccontextmanager
async def open_object_store(
    settings: Settings,
    intake: IntakeSettings | None = None,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    emulator: bool = False,
) -> AsyncIterator[S3ObjectStore]:
    """An S3 client for AWS_ENDPOINT_URL (moto, MinIO) or real AWS, with bounded timeouts and retries.

    Opening makes no network call, so a service starts even when S3 is unreachable. `emulator` sends
    dummy credentials (for the embedded moto), so real ones are never sent to it."""
    intake = intake or IntakeSettings()
    # One client per service: its connections are what bounds the service's S3 calls in flight. Enough for
    # every validation a validator runs at once to read a pair of inputs (R1, R2) together (was
    # max(10, storage_concurrency): 16 connections for 16 validations, so half of a burst's GETs queued).
    connections = max(10, intake.storage_concurrency, 2 * settings.validation_concurrency)
    config = client_config(intake.storage_timeout_seconds, max_pool_connections=connections, **LEAN_REQUESTS)
    core = AioSession()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    session = aioboto3.Session(
        botocore_session=core,
        **({"aws_access_key_id": "testing", "aws_secret_access_key": "testing"} if emulator else {}),
    )
    # The lean ranged GETs' own connections (stamen.inputs.s3_get), as many and as patient as the client's;
    # bytes as S3 sends them (an object stored with Content-Encoding: gzip is not inflated), as botocore.
    timeout = aiohttp.ClientTimeout(
        sock_connect=intake.storage_timeout_seconds, sock_read=intake.storage_timeout_seconds
    )
    async with (
        session.client(
            "s3",
            endpoint_url=endpoint_url or settings.aws_endpoint_url,
            region_name=region or settings.aws_region,
            config=config,
        ) as client,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        ) as http,
    ):
        yield S3ObjectStore(client, http=http, session=core)


async def gather_bounded(limit: asyncio.Semaphore, *calls: Any) -> list[Any]:
    """Run coroutines concurrently, at most `limit` at a time, results in order."""

    async def one(call: Any) -> Any:
        async with limit:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))
