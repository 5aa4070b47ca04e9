"""Front-end assets come from the npm registry through scripts/fetch-assets only: the committed files match
the lock (package, version, registry integrity, licence, per-file sha512), a hand edit stops the portal, and
no page loads anything from another host."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from importlib import resources

import pytest

from services.portal.web.assets import AssetMismatch, Assets, verify_vendor
from tests.fixtures import REPO_ROOT


def test_the_committed_vendor_files_are_the_locked_registry_files() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "fetch-assets"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lock = json.loads((REPO_ROOT / "services/portal/web/static/vendor/assets.lock.json").read_text())
    names = {p["name"] for p in lock["packages"]}
    assert {"htmx.org", "chart.js", "@picocss/pico"} <= names
    for pkg in lock["packages"]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg["version"]), pkg  # pinned, not a range
        assert pkg["integrity"].startswith("sha512-") and pkg["license"] in ("MIT", "0BSD"), pkg
        assert any(f["from"] == pkg["license_file"] for f in pkg["files"].values()), "licence file kept"


def test_a_hand_edited_vendor_file_stops_the_portal() -> None:
    assets = Assets.load()
    path = "vendor/htmx.org/htmx.min.js"
    edited = dict(assets.files)
    edited[path] = dataclasses.replace(edited[path], body=edited[path].body + b"\n// patched")
    with pytest.raises(AssetMismatch, match=r"htmx\.min\.js.*htmx\.org@.*scripts/fetch-assets"):
        verify_vendor(edited, assets.lock)
    extra = dict(assets.files)
    extra["vendor/htmx.org/extra.js"] = edited[path]
    with pytest.raises(AssetMismatch, match=r"extra\.js is not in"):
        verify_vendor(extra, assets.lock)


def test_pages_load_nothing_from_another_host() -> None:
    templates = resources.files("services.portal.web") / "templates"
    external = re.compile(r"""(?:src|href)=["']?(?:https?:)?//""")
    found = []
    for template in templates.rglob("*.html"):  # type: ignore[attr-defined]
        text = template.read_text()
        found += [f"{template.name}: {m.group(0)}" for m in external.finditer(text)]
        assert "<script>" not in text and " style=" not in text, f"inline script/style in {template.name}"
    assert not found, found


def test_every_error_code_of_the_pages_is_documented() -> None:
    web = REPO_ROOT / "services" / "portal" / "web"
    source = "".join(p.read_text() for p in web.rglob("*.py"))
    codes = set(re.findall(r'"([A-Z]+(?:_[A-Z]+)+)"', source)) - {"NEW_PASSWORD_REQUIRED", "RUN_ID"}
    docs = (REPO_ROOT / "docs" / "portal.md").read_text()
    assert {"CSRF_TOKEN_INVALID", "BUCKET_NOT_FOUND", "PORTAL_ASSET_MISMATCH"} <= codes
    assert sorted(c for c in codes if f"`{c}`" not in docs) == []
