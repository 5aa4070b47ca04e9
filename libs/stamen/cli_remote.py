"""Commands against a running server over its HTTP API (the other commands talk to PostgreSQL directly).

`stamen api ls|call` are generic: they read the server's OpenAPI document, so every route is covered.
`stamen remote ...` are thin shortcuts for common operations, built on the same call. `stamen login`
keeps Cognito tokens in a 0600 session file. Errors print `error [CODE]: message` and exit 1.

This module: `login`, `logout` and the wiring; `cli_remote_api` (api ls|call), `cli_remote_worksets`
(the shortcuts) and `cli_remote_output` (options, printing) hold the rest."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from stamen.cli import JsonOpt
from stamen.cli_remote_api import api_app
from stamen.cli_remote_output import UrlOpt, emit, fail, guard, json_of
from stamen.cli_remote_worksets import remote_app
from stamen.remote import Connection, RemoteClient, RemoteError, Session, json_body, session_path
from stamen.remote.session import delete_session, load_session, normalize_url, save_session


def _claims(token: str) -> dict[str, Any]:
    """The id token's claims, read for display only (the server verifies tokens; this never trusts one)."""
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


def _read_password(from_stdin: bool, *, prompt: str = "Password", confirm: bool = False) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise RemoteError(
            "PASSWORD_MISSING", "no password given: type it at the prompt, or pipe it with --password-stdin"
        )
    return password


def login(
    email: Annotated[str, typer.Option("--email", help="Your user name (e-mail) in the user pool.")],
    url: UrlOpt = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (one line; an invited "
            "user's first sign-in reads the new password from the next).",
        ),
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
        try:
            answer = client.call("auth_login", body=json_body({"email": email, "password": password}))
        except RemoteError as exc:
            if exc.code != "AUTH_NEW_PASSWORD_REQUIRED":
                raise
            # An invited user's temporary password: choose the real one now (the next stdin line, or prompted).
            if not password_stdin:
                typer.echo("Your password is a temporary one: choose a new password.", err=True)
            new = _read_password(password_stdin, prompt="New password", confirm=not password_stdin)
            answer = client.call(
                "auth_new_password",
                body=json_body(
                    {"email": email, "session": str(exc.details.get("session") or ""), "new_password": new}
                ),
            )
        tokens = json_of(answer)
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

    doc = guard(as_json, run)
    who = f"tenant {doc['tenant']}" if doc["tenant"] else ", ".join(doc["groups"]) or "no tenant"
    emit(
        as_json,
        doc,
        f"signed in to {doc['url']} as {doc['email']} ({who}); session saved in {doc['session_file']}, "
        f"valid until {doc['expires_at']}",
    )


def logout(as_json: JsonOpt = False) -> None:
    """Sign out on the server (Cognito ends the session everywhere) and delete the session file."""
    path = session_path()
    session = guard(as_json, lambda: load_session(path))
    if session is None:
        emit(as_json, {"signed_out": False, "session_file": str(path)}, f"not signed in (no {path})")
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
        fail(
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
    emit(
        as_json,
        {"signed_out": True, "url": session.url, "email": session.email, "session_file": str(path)},
        f"signed out of {session.url} ({session.email}); deleted {path}",
    )


def register(app: typer.Typer) -> None:
    """Add the commands that talk to a running server to `app`."""
    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(api_app, name="api")
    app.add_typer(remote_app, name="remote")
