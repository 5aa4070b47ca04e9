"""Commands against a running server over its HTTP API (the other commands talk to PostgreSQL directly).

`stamen api ls|call` are generic: they read the server's OpenAPI document, so every route is covered.
`stamen remote ...` are thin shortcuts for common operations, built on the same call. `stamen login`
keeps Cognito tokens in a 0600 session file. Errors print `error [CODE]: message` and exit 1."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from stamen.cli import JsonOpt, workset_line
from stamen.remote import (
    Body,
    Connection,
    RemoteClient,
    RemoteError,
    Session,
    json_body,
    read_body,
    resolve,
    session_path,
)
from stamen.remote.operations import JSON, YAML, parse_pairs
from stamen.remote.session import delete_session, load_session, normalize_url, save_session
from stamen.remote.transport import Answer

T = TypeVar("T")
api_app = typer.Typer(
    help="Any API operation of a running server, from its OpenAPI document.", no_args_is_help=True
)
remote_app = typer.Typer(help="Shortcuts for common operations on a running server.", no_args_is_help=True)
remote_worksets_app = typer.Typer(help="Worksets on a running server.", no_args_is_help=True)
remote_app.add_typer(remote_worksets_app, name="worksets")

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
WorksetIdArg = Annotated[str, typer.Argument(help="The workset id.")]


# --- output -----------------------------------------------------------------------------------------
def _detail_lines(details: dict[str, Any]) -> list[str]:
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


def _fail(as_json: bool, exc: RemoteError) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": exc.document()}, indent=2, default=str))
    else:
        typer.echo("\n".join([f"error [{exc.code}]: {exc}", *_detail_lines(exc.details)]), err=True)
    raise typer.Exit(1)


def _guard(as_json: bool, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RemoteError as exc:
        _fail(as_json, exc)


def _emit(as_json: bool, data: Any, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _print_answer(answer: Answer) -> None:
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


def _json_of(answer: Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        raise RemoteError(
            "RESPONSE_INVALID",
            f"the server's answer is not JSON ({answer.content_type or 'no content type'}, HTTP {answer.status})",
            {"status": answer.status},
        ) from None


def _client(url: str | None, token: str | None) -> RemoteClient:
    return RemoteClient(resolve(url, token))


# --- login / logout ---------------------------------------------------------------------------------
def _claims(token: str) -> dict[str, Any]:
    """The id token's claims, read for display only (the server verifies tokens; this never trusts one)."""
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise RemoteError(
            "PASSWORD_MISSING", "no password given: type it at the prompt, or pipe it with --password-stdin"
        )
    return password


def login(
    email: Annotated[str, typer.Option("--email", help="Your user name (e-mail) in the user pool.")],
    url: UrlOpt = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (one line).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign in to a running server; its tokens are kept in $STAMEN_CONFIG_DIR/session.json (mode 0600)."""
    import os

    def run() -> dict[str, Any]:
        base = url or os.environ.get("STAMEN_URL")
        if not base:
            previous = load_session(session_path())
            base = previous.url if previous else None
        if not base:
            raise RemoteError(
                "URL_MISSING", "no server URL: pass --url (e.g. http://127.0.0.1:8080) or set STAMEN_URL"
            )
        password = _read_password(password_stdin)
        client = RemoteClient(Connection(normalize_url(base), None, "none"))
        started = time.time()
        answer = client.call("auth_login", body=json_body({"email": email, "password": password}))
        tokens = _json_of(answer)
        session = Session(
            url=client.connection.url,
            email=email,
            id_token=str(tokens["id_token"]),
            access_token=str(tokens["access_token"]),
            token_type=str(tokens.get("token_type") or "Bearer"),
            expires_at=started + float(tokens["expires_in"]),
        )
        path = session_path()
        save_session(path, session)
        claims = _claims(session.id_token)
        return {
            "url": session.url,
            "email": email,
            "tenant": claims.get("custom:customer_id"),
            "groups": claims.get("cognito:groups") or [],
            "session_file": str(path),
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(session.expires_at)),
        }

    doc = _guard(as_json, run)
    who = f"tenant {doc['tenant']}" if doc["tenant"] else ", ".join(doc["groups"]) or "no tenant"
    _emit(
        as_json,
        doc,
        f"signed in to {doc['url']} as {doc['email']} ({who}); session saved in {doc['session_file']}, "
        f"valid until {doc['expires_at']}",
    )


def logout(as_json: JsonOpt = False) -> None:
    """Sign out on the server (Cognito ends the session everywhere) and delete the session file."""
    path = session_path()
    session = _guard(as_json, lambda: load_session(path))
    if session is None:
        _emit(as_json, {"signed_out": False, "session_file": str(path)}, f"not signed in (no {path})")
        return

    def sign_out(token: str) -> None:
        RemoteClient(Connection(session.url, token, f"the session file {path}")).call("auth_logout")

    try:
        try:
            # The access token makes Cognito revoke it at once (GlobalSignOut); a server that accepts
            # only id tokens signs the user out by name instead.
            sign_out(session.access_token)
        except RemoteError as exc:
            if exc.code != "AUTH_TOKEN_WRONG_USE":
                raise
            sign_out(session.id_token)
    except RemoteError as exc:
        delete_session(path)
        _fail(
            as_json,
            RemoteError(
                exc.code,
                f"{exc}; the session file {path} was deleted, but the server did not sign you out "
                "(a refresh token may stay valid until it expires)",
                exc.details,
                status=exc.status,
            ),
        )
    delete_session(path)
    _emit(
        as_json,
        {"signed_out": True, "url": session.url, "email": session.email, "session_file": str(path)},
        f"signed out of {session.url} ({session.email}); deleted {path}",
    )


# --- api ls / api call ------------------------------------------------------------------------------
@api_app.command("ls")
def api_ls(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The operations the server offers: operationId, method, path, summary."""
    ops = _guard(as_json, lambda: _client(url, token).operations())
    rows = [op.as_dict() for op in ops]
    width = max((len(op.operation_id) for op in ops), default=0)
    path_width = max((len(op.path) for op in ops), default=0)
    text = "\n".join(
        f"{op.operation_id:<{width}}  {op.method:<6}  {op.path:<{path_width}}  {op.summary}" for op in ops
    )
    _emit(as_json, rows, text or "the server documents no operations")


@api_app.command("call")
def api_call(
    operation_id: Annotated[str, typer.Argument(help="An operationId from `stamen api ls`.")],
    path: Annotated[
        list[str] | None, typer.Option("--path", help="NAME=VALUE of a path parameter (repeatable).")
    ] = None,
    query: Annotated[
        list[str] | None, typer.Option("--query", help="NAME=VALUE of a query parameter (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header", help="NAME=VALUE of a request header, e.g. X-Stamen-Tenant=acme (repeatable)."
        ),
    ] = None,
    body: Annotated[
        str | None,
        typer.Option(
            "--body", help="The request body: JSON, or @file.json, @file.yaml, @- (standard input)."
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call one operation by its operationId and print the answer (JSON pretty-printed, CSV as is)."""

    def run() -> Answer:
        path_pairs = parse_pairs(path or [], "--path")
        query_pairs = parse_pairs(query or [], "--query")
        headers = dict(parse_pairs(header or [], "--header"))
        client = _client(url, token)
        op = client.operation(operation_id)
        request_body = read_body(body, op) if body is not None else None
        return client.call(
            operation_id, path=path_pairs, query=query_pairs, body=request_body, headers=headers
        )

    _print_answer(_guard(as_json, run))


# --- shortcuts --------------------------------------------------------------------------------------
def _call_json(
    url: str | None,
    token: str | None,
    operation_id: str,
    *,
    path: Sequence[tuple[str, str]] = (),
    query: Sequence[tuple[str, str]] = (),
    body: Body | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    return _json_of(
        _client(url, token).call(operation_id, path=path, query=query, body=body, headers=headers)
    )


@remote_worksets_app.command("ls")
def remote_worksets_ls(
    state: Annotated[str | None, typer.Option(help="Only worksets in this state.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Operators: only this tenant.")] = None,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    limit: Annotated[int | None, typer.Option(help="Page size, 1-500 (server default 50).")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Worksets you may see, newest first, one page at a time."""
    given = {"state": state, "tenant": tenant, "cursor": cursor, "limit": limit}
    query = [(k, str(v)) for k, v in given.items() if v is not None]
    page = _guard(as_json, lambda: _call_json(url, token, "worksets_list", query=query))
    lines = [workset_line(w) for w in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"more: --cursor {page['next_cursor']}")
    _emit(as_json, page, "\n".join(lines) or "no worksets")


@remote_worksets_app.command("show")
def remote_worksets_show(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One workset with its state history and diagnoses."""
    ws = _guard(as_json, lambda: _call_json(url, token, "worksets_get", path=[("workset_id", workset_id)]))
    lines = [f"{ws['id']}  {ws['name']}  tenant={ws['tenant']}  state={ws['state']}  attempt={ws['attempt']}"]
    lines += [
        f"  v{h['version']:<3} {h['at']}  {h['from_state'] or '-':>12} -> {h['to_state']:<14} "
        f"by {h['actor']}: {h['reason']}"
        for h in ws.get("history", [])
    ]
    lines += [
        f"  diagnosis (attempt {d['attempt']}): {d['code']} ({d['retry_class']})"
        for d in ws.get("diagnoses", [])
    ]
    _emit(as_json, ws, "\n".join(lines))


def _state_line(doc: dict[str, Any]) -> str:
    pending = " (cancel pending: the scheduler is stopping its job)" if doc.get("pending") else ""
    return f"{doc['workset_id']}: {doc['state']}{pending}"


@remote_worksets_app.command("cancel")
def remote_worksets_cancel(
    workset_id: WorksetIdArg,
    reason: Annotated[str | None, typer.Option(help="Why; kept in the workset's history.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a workset (a running one stops once the scheduler has stopped its job)."""
    body = json_body({"reason": reason}) if reason else None
    doc = _guard(
        as_json,
        lambda: _call_json(url, token, "worksets_cancel", path=[("workset_id", workset_id)], body=body),
    )
    _emit(as_json, doc, _state_line(doc))


@remote_worksets_app.command("retry")
def remote_worksets_retry(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Requeue a failed or dead-lettered workset."""
    doc = _guard(as_json, lambda: _call_json(url, token, "worksets_retry", path=[("workset_id", workset_id)]))
    _emit(as_json, doc, _state_line(doc))


@remote_worksets_app.command("archive")
def remote_worksets_archive(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Archive a finished workset."""
    doc = _guard(
        as_json, lambda: _call_json(url, token, "worksets_archive", path=[("workset_id", workset_id)])
    )
    _emit(as_json, doc, _state_line(doc))


@remote_app.command("submit")
def remote_submit(
    file: Annotated[Path, typer.Argument(help="Workset spec: .json is sent as JSON, anything else as YAML.")],
    tenant: Annotated[
        str | None, typer.Option(help="Operators: the tenant to submit for (X-Stamen-Tenant).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Same key twice makes one workset (Idempotency-Key).")
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a workset spec file to the server (POST /api/v1/worksets)."""

    def run() -> Any:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise RemoteError(
                "FILE_UNREADABLE", f"{file}: {exc.strerror or exc}", {"path": str(file)}
            ) from None
        # The file goes as it is, so the server's findings point at its own lines.
        body = Body(data, JSON if file.suffix.lower() == ".json" else YAML)
        headers = {}
        if tenant:
            headers["X-Stamen-Tenant"] = tenant
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return _call_json(url, token, "worksets_create", body=body, headers=headers)

    doc = _guard(as_json, run)
    verb = "submitted" if doc.get("created", True) else "already submitted (same idempotency key)"
    lines = [f"{verb}: {doc['workset_id']} ({doc['state']})"]
    lines += _detail_lines({"findings": doc.get("warnings") or []})
    _emit(as_json, doc, "\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add the commands that talk to a running server to `app`."""
    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(api_app, name="api")
    app.add_typer(remote_app, name="remote")
