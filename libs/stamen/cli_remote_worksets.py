"""`stamen remote ...`: thin shortcuts for common operations on a running server (worksets: ls, show,
cancel, retry, archive; submit), built on the same call as `stamen api call`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from stamen.cli import JsonOpt, workset_line
from stamen.cli_remote_output import TokenOpt, UrlOpt, client_for, detail_lines, emit, guard, json_of
from stamen.remote import Body, RemoteError, json_body
from stamen.remote.operations import JSON, YAML

remote_app = typer.Typer(help="Shortcuts for common operations on a running server.", no_args_is_help=True)
remote_worksets_app = typer.Typer(help="Worksets on a running server.", no_args_is_help=True)
remote_app.add_typer(remote_worksets_app, name="worksets")
WorksetIdArg = Annotated[str, typer.Argument(help="The workset id.")]


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
    return json_of(
        client_for(url, token).call(operation_id, path=path, query=query, body=body, headers=headers)
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
    page = guard(as_json, lambda: _call_json(url, token, "worksets_list", query=query))
    lines = [workset_line(w) for w in page["items"]]
    if page.get("next_cursor"):
        lines.append(f"more: --cursor {page['next_cursor']}")
    emit(as_json, page, "\n".join(lines) or "no worksets")


@remote_worksets_app.command("show")
def remote_worksets_show(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """One workset with its state history and diagnoses."""
    ws = guard(as_json, lambda: _call_json(url, token, "worksets_get", path=[("workset_id", workset_id)]))
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
    emit(as_json, ws, "\n".join(lines))


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
    doc = guard(
        as_json,
        lambda: _call_json(url, token, "worksets_cancel", path=[("workset_id", workset_id)], body=body),
    )
    emit(as_json, doc, _state_line(doc))


@remote_worksets_app.command("retry")
def remote_worksets_retry(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Requeue a failed or dead-lettered workset."""
    doc = guard(as_json, lambda: _call_json(url, token, "worksets_retry", path=[("workset_id", workset_id)]))
    emit(as_json, doc, _state_line(doc))


@remote_worksets_app.command("archive")
def remote_worksets_archive(
    workset_id: WorksetIdArg, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Archive a finished workset."""
    doc = guard(
        as_json, lambda: _call_json(url, token, "worksets_archive", path=[("workset_id", workset_id)])
    )
    emit(as_json, doc, _state_line(doc))


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

    doc = guard(as_json, run)
    verb = "submitted" if doc.get("created", True) else "already submitted (same idempotency key)"
    lines = [f"{verb}: {doc['workset_id']} ({doc['state']})"]
    lines += detail_lines({"findings": doc.get("warnings") or []})
    emit(as_json, doc, "\n".join(lines))
