"""The portal's static files, served by stamen itself (labs run offline: no CDN).

Two kinds: stamen's own CSS/JS (static/css, static/js) and third-party files (static/vendor), which come
only from scripts/fetch-assets: each is listed in static/vendor/assets.lock.json with the npm package,
version, registry integrity and licence it came from, and the sha512 of the file. At start-up every vendor
file is checked against the lock, and a file that differs (a hand edit, a bad checkout) stops the portal
with the file's name. URLs carry a content hash (`?v=`), so browsers may cache them for a year."""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from aiohttp import web

STATIC_PREFIX = "/static/"
LOCK_NAME = "assets.lock.json"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain", ".json": "application/json"}


class AssetMismatch(RuntimeError):
    code = "PORTAL_ASSET_MISMATCH"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # first 12 hex digits of the content's sha256


class Assets:
    def __init__(self, files: dict[str, Asset], lock: dict[str, object]) -> None:
        self.files = files
        self.lock = lock

    @classmethod
    def load(cls) -> Assets:
        root = resources.files("services.portal.web") / "static"
        files: dict[str, Asset] = {}

        def walk(folder: Traversable, prefix: str) -> None:
            for entry in folder.iterdir():
                rel = f"{prefix}{entry.name}"
                if entry.is_dir():
                    walk(entry, rel + "/")
                elif entry.name != LOCK_NAME and not entry.name.startswith("."):
                    body = entry.read_bytes()
                    suffix = PurePosixPath(entry.name).suffix
                    kind = (
                        _TYPES.get(suffix)
                        or mimetypes.guess_type(entry.name)[0]
                        or "application/octet-stream"
                    )
                    files[rel] = Asset(body, kind, hashlib.sha256(body).hexdigest()[:12])

        walk(root, "")
        lock = json.loads((root / "vendor" / LOCK_NAME).read_text())
        verify_vendor(files, lock)
        return cls(files, lock)

    def url(self, path: str) -> str:
        asset = self.files.get(path)
        if asset is None:
            raise KeyError(f"no static file {path!r} in services/portal/web/static")
        return f"{STATIC_PREFIX}{path}?v={asset.version}"


def verify_vendor(files: dict[str, Asset], lock: dict[str, object]) -> None:
    """Every vendor file is in the lock with its sha512, and every locked file is present and unchanged."""
    listed: set[str] = set()
    packages = lock.get("packages")
    assert isinstance(packages, list)
    for pkg in packages:
        for rel, meta in pkg.get("files", {}).items():
            path = f"vendor/{rel}"
            listed.add(path)
            asset = files.get(path)
            expected = meta["sha512"]
            actual = (
                "sha512-" + base64.b64encode(hashlib.sha512(asset.body).digest()).decode() if asset else None
            )
            if actual != expected:
                raise AssetMismatch(
                    f"static/{path} is {'missing' if asset is None else 'not the file'} {pkg['name']}@"
                    f"{pkg['version']} ({meta['from']}) of {LOCK_NAME}; run scripts/fetch-assets"
                )
    extra = sorted(p for p in files if p.startswith("vendor/") and p not in listed)
    if extra:
        raise AssetMismatch(
            f"static/{extra[0]} is not in {LOCK_NAME}; vendor files come only from scripts/fetch-assets"
        )


ASSETS = web.AppKey("assets", Assets)


async def static_file(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    asset = request.app[ASSETS].files.get(path)
    if asset is None:
        raise web.HTTPNotFound(text="no such file")
    versioned = request.query.get("v") == asset.version
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
        "ETag": f'"{asset.version}"',
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, headers=headers)
