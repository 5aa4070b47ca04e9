"""What the commands against a running server share: their --url and --token options, how they print
answers (JSON pretty-printed, anything else as sent) and errors (`error [CODE]: message` and the
findings a person needs to fix the request, or the error document with --json; exit 1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from stamen.remote import RemoteClient, RemoteError, resolve
from stamen.remote.transport import Answer

T = TypeVar("T")
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="The portal's base URL; default: STAMEN_URL, then the session's."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", help="A Cognito token or API key; default: STAMEN_TOKEN, STAMEN_API_KEY, then the session."
    ),
]


def detail_lines(details: dict[str, Any]) -> list[str]:
    """The parts of an error's details a person needs to fix the request (the rest is in --json)."""
    lines = []
    for f in details.get("findings") or []:
        if isinstance(f, dict):
            where = f" at {f['field']}" if f.get("field") else ""
            fix = f" (fix: {f['fix']})" if f.get("fix") else ""
            lines.append(
                f"  {f.get('severity', 'error')} {f.get('code', '?')}{where}: {f.get('message', '')}{fix}"
            )
    for e in details.get("errors") or []:
        if isinstance(e, dict):
            lines.append(f"  {'.'.join(str(p) for p in e.get('loc', [])) or '(body)'}: {e.get('msg', '')}")
    return lines


def fail(as_json: bool, exc: RemoteError) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": exc.document()}, indent=2, default=str))
    else:
        typer.echo("\n".join([f"error [{exc.code}]: {exc}", *detail_lines(exc.details)]), err=True)
    raise typer.Exit(1)


def guard(as_json: bool, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RemoteError as exc:
        fail(as_json, exc)


def emit(as_json: bool, data: Any, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def print_answer(answer: Answer) -> None:
    """JSON pretty-printed; anything else (text/csv, ...) exactly as the server sent it."""
    if answer.is_json and answer.body.strip():
        try:
            typer.echo(json.dumps(answer.json(), indent=2))
            return
        except ValueError:
            pass
    text = answer.text()
    if text:
        typer.echo(text, nl=not text.endswith("\n"))


def json_of(answer: Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        raise RemoteError(
            "RESPONSE_INVALID",
            f"the server's answer is not JSON ({answer.content_type or 'no content type'}, HTTP {answer.status})",
            {"status": answer.status},
        ) from None


def client_for(url: str | None, token: str | None) -> RemoteClient:
    return RemoteClient(resolve(url, token))
