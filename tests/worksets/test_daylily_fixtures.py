"""The vendored Daylily fixtures (tests/worksets/fixtures/daylily) are a faithful copy of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import conftest
from .conftest import SHARED_DAYLILY_DIR, VENDORED_DAYLILY_DIR, daylily_fixture_dir


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_vendored_copy_is_complete() -> None:
    vendored = _files(VENDORED_DAYLILY_DIR)
    assert {"README.md", "daylily_work.yaml", "manifests/analysis_samples_template.tsv"} <= set(vendored)
    assert sum(name.startswith("manifests/") for name in vendored) == 6


@pytest.mark.skipif(not SHARED_DAYLILY_DIR.is_dir(), reason="no ../shared checkout: nothing to compare with")
def test_the_vendored_copy_is_identical_to_shared() -> None:
    # Drift either way fails: a file changed, added or removed in ../shared must be copied here too
    # (cp -r ../shared/compat/daylily/. tests/worksets/fixtures/daylily/).
    shared, vendored = _files(SHARED_DAYLILY_DIR), _files(VENDORED_DAYLILY_DIR)
    assert sorted(vendored) == sorted(shared)
    assert [name for name in shared if shared[name] != vendored[name]] == []


def test_the_fixture_prefers_shared_and_falls_back_to_the_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(conftest, "SHARED_DAYLILY_DIR", tmp_path / "no-shared-checkout")
    assert daylily_fixture_dir() == VENDORED_DAYLILY_DIR
    monkeypatch.setattr(conftest, "SHARED_DAYLILY_DIR", tmp_path)
    assert daylily_fixture_dir() == tmp_path
