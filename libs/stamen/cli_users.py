"""`stamen user add`: people who sign in to the portal and the API (Cognito users), made by an operator.

A user is an operator (`--operator`: the operators group, every tenant) or belongs to one onboarded tenant
(`--tenant T`: `custom:customer_id`, which users cannot change themselves). With `--password-stdin` the
password given is permanent; otherwise the user is invited: Cognito mails a temporary password, which the
user replaces at the first sign-in (`stamen login` asks; over HTTP `POST /api/v1/auth/new-password`). The
embedded stack's emulator mails nothing, so there the temporary password is printed instead.
"""

from __future__ import annotations

import secrets
import sys
from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import CliError, JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool

user_app = typer.Typer(
    help="Users who sign in (Cognito): operators and tenants' users.", no_args_is_help=True
)


def temporary_password() -> str:
    """Meets the pool's policy (12+ characters, upper, lower, digit)."""
    return f"Tmp-{secrets.token_urlsafe(12)}-9a"


@user_app.command("add")
def user_add(
    email: Annotated[str, typer.Argument(help="The user's e-mail address (their user name).")],
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator: sees and manages every tenant.")
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="The onboarded tenant the user belongs to.")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read a permanent password from standard input (one line); "
            "without it the user is invited with a temporary one.",
        ),
    ] = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user: an operator, or a user of one tenant; with a password, or invited."""
    from stamen.auth import cognito
    from stamen.customers.cloud import open_clients
    from stamen.customers.onboarding import AsyncCustomerManager
    from stamen.customers.settings import CustomerSettings
    from stamen.inputs.objects import endpoint_is_loopback

    if operator == (tenant is not None):
        raise CliError("USER_REQUEST_INVALID", "say what the user is: --operator, or --tenant <tenant id>")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    if password_stdin and not password:
        raise CliError("PASSWORD_MISSING", "--password-stdin read an empty line")

    async def add(pool: asyncpg.Pool) -> dict[str, Any]:
        settings = CustomerSettings()
        if tenant is not None:  # a user's tenant claim is fixed at creation: only an onboarded customer's
            await AsyncCustomerManager(pool, settings).get_customer(tenant)
        emulator = endpoint_is_loopback(settings.aws_endpoint_url)  # the embedded moto: it mails nothing
        temporary = None if password is not None else (temporary_password() if emulator else None)
        async with open_clients(settings) as aws:
            found = await cognito.ensure_user_pool(
                aws.cognito, name=settings.cognito_user_pool_name, operator_group=settings.cognito_operator_group,
                create=settings.cognito_create_pool, user_pool_id=settings.cognito_user_pool_id,
            )  # fmt: skip
            await cognito.admin_create_user(
                aws.cognito, user_pool_id=found.user_pool_id, email=email, customer_id=tenant,
                temporary_password=temporary or (temporary_password() if password is not None else None),
            )  # fmt: skip
            if password is not None:
                await cognito.admin_set_password(
                    aws.cognito, user_pool_id=found.user_pool_id, username=email, password=password
                )
            if operator:
                await cognito.add_operator(
                    aws.cognito,
                    user_pool_id=found.user_pool_id,
                    username=email,
                    group=settings.cognito_operator_group,
                )
        return {
            "email": email,
            "operator": operator,
            "tenant": tenant,
            "user_pool_id": found.user_pool_id,
            "invited": password is None,
            "temporary_password": temporary,
            "mailed": password is None and temporary is None,
        }

    doc = _run(as_json, _with_pool(state_dir, add))
    who = "operator" if operator else f"user of tenant {tenant}"
    if not doc["invited"]:
        text = f"added {email} ({who}); sign in: stamen login --email {email}"
    elif doc["mailed"]:
        text = f"invited {email} ({who}): Cognito mailed a temporary password; the first `stamen login` asks for a new one"
    else:
        text = (
            f"invited {email} ({who}). The emulator mails nothing, so here is the temporary password: "
            f"{doc['temporary_password']}\nThe first `stamen login --email {email}` asks for it, then for a new one."
        )
    _emit(as_json, doc, text)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
