"""A ranged S3 GET (or a HEAD) that succeeds without botocore's per-request machinery: the validator's two
reads per workset spent ~0.9 ms of CPU each in it (parameter serialisation, endpoint rules, ~20 event hooks, a
modelled parse of ~40 headers), beside ~0.5 ms for the HTTP request itself. The request is still signed by
botocore's own signer (S3SigV4Auth): stamen does not carry a SigV4 implementation of its own.

Only the success of a plain ranged GetObject or a HeadObject (the reference files' probes, eight per
validation where STAMEN_REFERENCE_LOCATION is set) is taken here. Where a bucket's objects are and in which region
they are signed are learned from botocore's own request for that bucket (its endpoint rules: virtual-hosted
or path style, custom endpoints, redirects to the bucket's region), and anything else (no learned address,
an error status, a connection that fails) is handed back to the caller, who makes the same call through
botocore: its retries and its reading of errors stay the only ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from yarl import URL

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class BucketAddress:
    """Where botocore sent a GET or HEAD of one of the bucket's objects: the URL up to the key, and the region
    its signature was scoped to."""

    base: str  # scheme://host[:port]/[bucket/] : the key, quoted, follows
    region: str

    @classmethod
    def learned(cls, url: str, authorization: str | None, *, bucket: str, key: str) -> BucketAddress | None:
        """From a GetObject or HeadObject botocore sent for `bucket`'s `key`: None when it is not a plain SigV4-signed GET of
        it (a query string, another signature scheme, a URL that does not end with the key as quoted here
        or names the bucket neither as its host's first label nor as its path's first segment)."""
        quoted = object_path(key)
        if "?" in url or not url.endswith("/" + quoted) or not authorization:
            return None
        base = url[: -len(quoted)]
        parts = urlsplit(base)
        if parts.path != f"/{bucket}/" and not (
            parts.path == "/" and (parts.hostname or "").startswith(f"{bucket}.")
        ):
            return None
        if not authorization.startswith("AWS4-HMAC-SHA256 Credential="):
            return None
        scope = authorization.removeprefix("AWS4-HMAC-SHA256 Credential=").split(",", 1)[0].split("/")
        if len(scope) != 5 or scope[3] != "s3" or scope[4] != "aws4_request":
            return None
        return cls(base, scope[2])


def object_path(key: str) -> str:
    """The key as it appears in the request's path (as botocore renders S3's greedy {Key+})."""
    return quote(key, safe="/~")


def signed_headers(
    method: str, url: str, range_header: str | None, credentials: ReadOnlyCredentials, region: str
) -> dict[str, str]:
    """The headers of a SigV4-signed GET or HEAD of `url` (already quoted), with `range_header` if given:
    signed by botocore's own S3 signer (S3SigV4Auth), as the client would sign them. The signer is
    ~50 us of the ~0.9 ms botocore spends per request; the rest (serialisation, endpoint rules, event
    hooks, the modelled parse of the answer) is what this module skips."""
    headers = {"X-Amz-Content-SHA256": EMPTY_SHA256}
    if range_header is not None:
        headers["Range"] = range_header
    request = AWSRequest(method=method, url=url, headers=headers)
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())


@dataclass(frozen=True)
class LeanResponse:
    status: int
    headers: Any  # case-insensitive: aiohttp's CIMultiDictProxy
    body: bytes


async def lean_request(
    session: aiohttp.ClientSession,
    method: str,
    address: BucketAddress,
    key: str,
    range_header: str | None,
    credentials: ReadOnlyCredentials,
) -> LeanResponse:
    """One signed GET or HEAD; its status, headers and body whatever they are (the caller decides what they
    mean)."""
    url = address.base + object_path(key)
    headers = signed_headers(method, url, range_header, credentials, address.region)
    async with session.request(
        method, URL(url, encoded=True), headers=headers, allow_redirects=False
    ) as response:
        body = await response.read()
        return LeanResponse(response.status, response.headers, body)
