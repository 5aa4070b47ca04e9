"""`stamen notify`: notification preferences of a tenant (or the operators), the deliveries made, and
resending a failed one. Runs against the database (and the secret store / SNS for preferences), like
the other operator commands; the same operations are in the API (docs/notifications.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
import yaml
from pydantic import ValidationError

from stamen.cli import CliError, JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool

notify_app = typer.Typer(help="Notifications: preferences, deliveries, resends.", no_args_is_help=True)
prefs_app = typer.Typer(help="A tenant's (or the operators') notification preferences.", no_args_is_help=True)
notify_app.add_typer(prefs_app, name="prefs")

OperatorsOpt = Annotated[
    bool, typer.Option("--operators", help="The operators' preferences instead of a tenant's.")
]


def _owner(tenant: str | None, operators: bool) -> str:
    from stamen.notifications.kinds import OPERATORS

    if operators == (tenant is not None):
        raise CliError("OWNER_REQUIRED", "name one tenant, or pass --operators (not both)")
    return OPERATORS if operators else str(tenant)


def _view_doc(view: Any) -> dict[str, Any]:
    return {
        "owner": view.owner,
        "preferences": view.preferences.model_dump(mode="json"),
        "secrets": {
            "linear_api_key_set": view.linear_api_key_set,
            "webhook_secret_set": view.webhook_secret_set,
        },
        "sns_topic_arn": view.sns_topic_arn,
        "subscriptions": [
            {
                "protocol": s.protocol,
                "endpoint": s.endpoint,
                "status": s.status,
                "filter_policy": s.filter_policy,
            }
            for s in view.subscriptions
        ],
        "updated_at": view.updated_at,
        "updated_by": view.updated_by,
    }


def _view_text(doc: dict[str, Any]) -> str:
    p = doc["preferences"]
    lines = [f"notification preferences of {doc['owner']}"]
    lines.append(
        f"  sns:     {'on' if p['sns']['enabled'] else 'off'} -> {doc['sns_topic_arn'] or 'no topic'}"
    )
    for s in doc["subscriptions"]:
        lines.append(
            f"           {s['protocol']} {s['endpoint']} ({s['status']}, severity {s['filter_policy'].get('severity')})"
        )
    linear = p["linear"]
    lines.append(
        f"  linear:  {'on' if linear['enabled'] else 'off'} team {linear['team_id'] or '-'}, "
        f"API key {'set' if doc['secrets']['linear_api_key_set'] else 'not set'}"
    )
    hook = p["webhook"]
    lines.append(
        f"  webhook: {'on' if hook['enabled'] else 'off'} {hook['url'] or '-'} ({hook['format']}), "
        f"secret {'set' if doc['secrets']['webhook_secret_set'] else 'not set'}"
    )
    lines.append(f"  only final failures: {p['only_final_failures']}")
    digest = p["digest"]
    lines.append(
        f"  digest: {'every ' + str(digest['interval_minutes']) + ' min up to ' + digest['max_severity'] if digest['enabled'] else 'off'}"
    )
    quiet = p["quiet_hours"]
    lines.append(
        "  quiet hours: "
        + (
            f"{quiet['start']}-{quiet['end']} {quiet['timezone']} (below {quiet['min_severity']} waits)"
            if quiet["enabled"]
            else "off"
        )
    )
    return "\n".join(lines)


def _read_preferences(path: str) -> Any:
    from stamen.notifications.preferences import PreferencesInput

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError("FILE_UNREADABLE", f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CliError("NOTIFY_PREFERENCES_INVALID", f"{path} is not JSON or YAML: {exc}") from None
    try:
        return PreferencesInput.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise CliError("NOTIFY_PREFERENCES_INVALID", problems) from None


@prefs_app.command("show")
def prefs_show(
    tenant: Annotated[str | None, typer.Argument()] = None,
    operators: OperatorsOpt = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show preferences (secrets only as set / not set) and the SNS subscriptions made from them."""
    from stamen.notifications.service import open_admin

    owner = _owner(tenant, operators)

    async def show(pool: asyncpg.Pool) -> dict[str, Any]:
        async with open_admin(pool) as admin:
            return _view_doc(await admin.preferences(owner))

    doc = _run(as_json, _with_pool(state_dir, show))
    _emit(as_json, doc, _view_text(doc))


@prefs_app.command("set")
def prefs_set(
    tenant: Annotated[str | None, typer.Argument()] = None,
    file: Annotated[str, typer.Option("--file", "-f", help="JSON or YAML preferences; - reads stdin.")] = "-",
    operators: OperatorsOpt = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the preferences with the file's (the API's body; `linear.api_key` and `webhook.secret`
    are write-only and go to the secret store)."""
    from stamen.notifications.service import open_admin

    owner = _owner(tenant, operators)
    update = _read_preferences(file)

    async def set_(pool: asyncpg.Pool) -> dict[str, Any]:
        async with open_admin(pool) as admin:
            return _view_doc(await admin.set_preferences(owner, update, actor="cli"))

    doc = _run(as_json, _with_pool(state_dir, set_))
    _emit(as_json, doc, _view_text(doc))


def _row_doc(r: Any) -> dict[str, Any]:
    from stamen.notifications.channels.base import redact_url

    doc = {k: v for k, v in r.__dict__.items() if k not in ("message",)}
    doc["title"] = r.message.get("message", {}).get("title", "")
    if r.channel == "webhook":
        doc["recipient"] = redact_url(r.recipient)
    return doc


@notify_app.command("ls")
def notify_ls(
    tenant: Annotated[str | None, typer.Option(help="One tenant's deliveries.")] = None,
    operators: OperatorsOpt = False,
    state: Annotated[
        str | None, typer.Option(help="pending | sending | delivered | failed | skipped")
    ] = None,
    channel: Annotated[str | None, typer.Option(help="sns | linear | webhook")] = None,
    workset: Annotated[str | None, typer.Option(help="One workset's deliveries.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deliveries, newest first (`--state failed`: what needs an operator)."""
    from stamen.notifications.kinds import OPERATORS
    from stamen.notifications.repository import DELIVERY_STATES, NotificationRepository

    if state is not None and state not in DELIVERY_STATES:
        raise CliError(
            "INVALID_PARAMETER", f"--state must be one of {', '.join(DELIVERY_STATES)}, not {state!r}"
        )
    owner = OPERATORS if operators else tenant

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            rows = await NotificationRepository(conn).list(
                owner=owner, state=state, channel=channel, workset_id=workset, limit=limit
            )
        return [_row_doc(r) for r in rows]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['id']:>6}  {r['state']:<9} {r['channel']:<7} {r['owner']:<16} {r['kind']:<14} "
        f"tries {r['attempts']}  {r['title'][:60]}"
        + (f"\n        last error: {r['last_error']}" if r["last_error"] else "")
        for r in rows
    )
    _emit(as_json, rows, text or "no notification deliveries")


@notify_app.command("show")
def notify_show(delivery_id: int, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """One delivery with the message it sends."""
    from stamen.notifications.service import open_admin

    async def show(pool: asyncpg.Pool) -> dict[str, Any]:
        async with open_admin(pool) as admin:
            row = await admin.delivery(delivery_id)
        return {**_row_doc(row), "message": row.message.get("message", {})}

    doc = _run(as_json, _with_pool(state_dir, show))
    _emit(
        as_json,
        doc,
        f"delivery {doc['id']} ({doc['state']}, {doc['channel']} -> {doc['recipient']}, tries {doc['attempts']})\n"
        f"key {doc['idempotency_key']}\n\n{doc['message'].get('text', '')}",
    )


@notify_app.command("resend")
def notify_resend(delivery_id: int, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Send a failed delivery again, with a fresh retry budget and the same idempotency key."""
    from stamen.notifications.service import open_admin

    async def resend(pool: asyncpg.Pool) -> dict[str, Any]:
        async with open_admin(pool) as admin:
            return _row_doc(await admin.resend(delivery_id, actor="cli"))

    doc = _run(as_json, _with_pool(state_dir, resend))
    _emit(as_json, doc, f"delivery {delivery_id} is {doc['state']} again: the notifier sends it now")


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")
