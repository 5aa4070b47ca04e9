"""`stamen api ls|call`: any operation of a running server, read from its OpenAPI document, so every
route is covered."""

from __future__ import annotations

from typing import Annotated

import typer

from stamen.cli import JsonOpt
from stamen.cli_remote_output import TokenOpt, UrlOpt, client_for, emit, guard, print_answer
from stamen.remote import read_body
from stamen.remote.operations import parse_pairs
from stamen.remote.transport import Answer

api_app = typer.Typer(
    help="Any API operation of a running server, from its OpenAPI document.", no_args_is_help=True
)


@api_app.command("ls")
def api_ls(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The operations the server offers: operationId, method, path, summary."""
    ops = guard(as_json, lambda: client_for(url, token).operations())
    rows = [op.as_dict() for op in ops]
    width = max((len(op.operation_id) for op in ops), default=0)
    path_width = max((len(op.path) for op in ops), default=0)
    text = "\n".join(
        f"{op.operation_id:<{width}}  {op.method:<6}  {op.path:<{path_width}}  {op.summary}" for op in ops
    )
    emit(as_json, rows, text or "the server documents no operations")


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
        client = client_for(url, token)
        op = client.operation(operation_id)
        request_body = read_body(body, op) if body is not None else None
        return client.call(
            operation_id, path=path_pairs, query=query_pairs, body=request_body, headers=headers
        )

    print_answer(guard(as_json, run))
