"""docs/errors.md is generated from the catalog and must stay in sync with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stamen.diagnostics import catalog
from stamen.diagnostics.docgen import main, render_errors_markdown

COMMITTED_DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_committed_errors_page_matches_generator() -> None:
    assert COMMITTED_DOCS.read_text(encoding="utf-8") == render_errors_markdown(), (
        "docs/errors.md is stale; regenerate it with `python -m stamen.diagnostics.docgen`"
    )


def test_every_code_has_a_table_row_and_an_anchored_section() -> None:
    page = render_errors_markdown()
    for entry in catalog():
        assert f"| [{entry.code}](#{entry.docs_anchor}) |" in page
        assert f'<a id="{entry.docs_anchor}"></a>\n\n## {entry.code}: {entry.name}\n' in page


def test_main_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "docs" / "errors.md"
    assert main(["--output", str(output), "--check"]) == 1
    assert main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == render_errors_markdown()
    assert main(["--output", str(output), "--check"]) == 0
    output.write_text("stale\n", encoding="utf-8")
    assert main(["--output", str(output), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
