"""The error catalog is loaded when the service is wired, not when its first failure arrives."""

from __future__ import annotations

from services.diagnostics.app import init_app
from stamen.diagnostics import classifier
from stamen.diagnostics.catalog import catalog
from stamen.settings import Settings


def test_the_catalog_is_loaded_and_indexed_at_start_up() -> None:
    catalog.cache_clear()
    classifier._PatternIndex._cache.clear()
    init_app(Settings())
    assert catalog.cache_info().currsize == 1
    index = classifier._PatternIndex._cache.get(id(catalog()))
    assert index is not None and index[0] is catalog()
