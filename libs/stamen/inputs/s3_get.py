"""A ranged S3 GET (or a HEAD) that succeeds without botocore's per-request machinery: the validator's two
reads per workset spent ~0.9 ms of CPU each in it (parameter serialisation, endpoint rules, ~20 event hooks, a signer
that rebuilds its key, a modelled parse of ~40 headers), beside ~0.5 ms for the HTTP request itself.

Only the success of a plain ranged GetObject or a HeadObject (the reference files' probes, eight per
validation where STAMEN_REFERENCE_LOCATION is set) is taken here. Where a bucket's objects are and in which region
they are signed are learned from botocore's own request for that bucket (its endpoint rules: virtual-hosted
or path style, custom endpoints, redirects to the bucket's region), and anything else (no learned address,
an error status, a connection that fails) is handed back to the caller, who makes the same call through
botocore: its retries and its reading of errors stay the only ones.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


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


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None


class SigningKeys:
    """SigV4 signing keys, one per (secret, day, region): four HMACs a day instead of four per request."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def key(self, secret: str, day: str, region: str) -> bytes:
        found = self._keys.get((secret, day, region))
        if found is None:
            if len(self._keys) > 64:
                self._keys.clear()
            found = _hmac(f"AWS4{secret}".encode(), day)
            for part in (region, "s3", "aws4_request"):
                found = _hmac(found, part)
            self._keys[(secret, day, region)] = found
        return found


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signed_headers(
    method: str,
    url: str,
    range_header: str | None,
    credentials: Credentials,
    region: str,
    keys: SigningKeys,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers of a SigV4-signed GET or HEAD of `url` (already quoted), with `range_header` if given, as
    botocore's S3SigV4Auth signs them (host, range, the empty payload's hash, the date, a session token)."""
    timestamp = (now or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
    day = timestamp[:8]
    parts = urlsplit(url)
    host = parts.hostname or ""
    default_port = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default_port:
        host = f"{host}:{parts.port}"
    headers = {"host": host}
    if range_header is not None:
        headers["range"] = range_header
    headers["x-amz-content-sha256"] = EMPTY_SHA256
    headers["x-amz-date"] = timestamp
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    names = ";".join(headers)  # already lower-case and in order
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            "",
            "".join(f"{name}:{' '.join(value.split())}\n" for name, value in headers.items()),
            names,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(keys.key(credentials.secret_key, day, region), to_sign.encode(), hashlib.sha256)
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature.hexdigest()}"
    )
    return headers


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
    credentials: Credentials,
    keys: SigningKeys,
) -> LeanResponse:
    """One signed GET or HEAD; its status, headers and body whatever they are (the caller decides what they
    mean)."""
    url = address.base + object_path(key)
    headers = signed_headers(method, url, range_header, credentials, address.region, keys)
    async with session.request(
        method, URL(url, encoded=True), headers=headers, allow_redirects=False
    ) as response:
        body = await response.read()
        return LeanResponse(response.status, response.headers, body)
