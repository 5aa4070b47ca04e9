"""`stamen diagnose FILE|-`: rank the catalog's explanations of a failure log, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from stamen.diagnostics import classify_error, diagnosis_document, format_ranked_text
from stamen.diagnostics.report import DEFAULT_RANKED

EXIT_UNREADABLE = 2


def _fail(as_json: bool, code: str, message: str) -> None:
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "message": message}}))
    else:
        typer.echo(f"error [{code}]: {message}", err=True)
    raise typer.Exit(EXIT_UNREADABLE)


def diagnose(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="A log file, or - to read standard input.")],
    exit_code: Annotated[
        int | None, typer.Option("--exit-code", help="The job's exit code (negative: killed by that signal).")
    ] = None,
    signal: Annotated[
        int | None, typer.Option("--signal", min=1, max=64, help="The signal that ended it.")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="The job state Slurm (or stamen: MAX_DURATION, LOST) reported."),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, max=50, help="How many candidates to show.")
    ] = DEFAULT_RANKED,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
) -> None:
    """Rank the error catalog's explanations of a failure log, with evidence and remediation.

    Nothing is stored and no server is needed. Exit status: 0 when a catalog entry matched, 1 when the
    failure is unknown to the catalog (WS-UNK-000), 2 when the log cannot be read.
    """
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.exists():
            _fail(as_json, "FILE_NOT_FOUND", f"{source} does not exist")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            _fail(as_json, "FILE_UNREADABLE", f"{source}: {exc.strerror or exc}")
    diagnosis = classify_error(text, exit_code=exit_code, signal=signal, slurm_state=state)
    if as_json:
        typer.echo(json.dumps(diagnosis_document(diagnosis, top=top), indent=2))
    else:
        typer.echo(format_ranked_text(diagnosis, top=top), nl=False)
    raise typer.Exit(1 if diagnosis.is_unknown else 0)


def register(app: typer.Typer) -> None:
    app.command("diagnose")(diagnose)
