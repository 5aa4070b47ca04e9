"""Customer and API-key commands: registered on the main `stamen` app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool

customer_app = typer.Typer(help="Customers (tenants): onboarding, quotas, usage.", no_args_is_help=True)
api_key_app = typer.Typer(help="API keys for lab systems, per tenant.", no_args_is_help=True)


def _customer_doc(c: Any) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in c.__dict__.items()}


@customer_app.command("add")
def customer_add(
    name: Annotated[str, typer.Argument(help="Customer display name.")],
    email: Annotated[str, typer.Option(help="Admin user's e-mail (Cognito username).")],
    customer_id: Annotated[
        str | None, typer.Option(help="Tenant id; derived from the name when omitted.")
    ] = None,
    max_concurrent_worksets: Annotated[int | None, typer.Option(help="Concurrency quota.")] = None,
    max_storage_gb: Annotated[float | None, typer.Option(help="Storage quota in GB.")] = None,
    billing_account_id: str | None = None,
    cost_center: str | None = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboard a customer: bucket, SNS topic, Cognito admin user, row (idempotent; rolled back on failure)."""
    from stamen.customers.model import OnboardingResult
    from stamen.customers.onboarding import AsyncCustomerManager

    async def add(pool: asyncpg.Pool) -> OnboardingResult:
        return await AsyncCustomerManager(pool).onboard_customer(
            customer_name=name,
            email=email,
            customer_id=customer_id,
            max_concurrent_worksets=max_concurrent_worksets,
            max_storage_gb=max_storage_gb,
            billing_account_id=billing_account_id,
            cost_center=cost_center,
        )

    result = _run(as_json, _with_pool(state_dir, add))
    doc = {"created": result.created, **_customer_doc(result.customer)}
    verb = "onboarded" if result.created else "already onboarded"
    _emit(as_json, doc, f"{verb}: {result.customer.customer_id} (bucket {result.customer.s3_bucket})")


@customer_app.command("ls")
def customer_ls(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """List customers."""
    from stamen.customers.onboarding import AsyncCustomerManager

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return [_customer_doc(c) for c in await AsyncCustomerManager(pool).list_customers(limit=1000)]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['customer_id']:<20} {r['status']:<11} {r['max_concurrent_worksets']:>3} slots "
        f"{r['max_storage_gb']:>8} GB  {r['customer_name']}"
        for r in rows
    )
    _emit(as_json, rows, text or "no customers")


@customer_app.command("show")
def customer_show(customer_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """One customer with the AWS resources onboarding made for it."""
    from stamen.customers.onboarding import AsyncCustomerManager

    async def show(pool: asyncpg.Pool) -> dict[str, Any]:
        manager = AsyncCustomerManager(pool)
        customer = await manager.get_customer(customer_id)
        resources = [r.__dict__ for r in await manager.resources(customer_id)]
        return {**_customer_doc(customer), "resources": resources}

    doc = _run(as_json, _with_pool(state_dir, show))
    lines = [f"{doc['customer_id']}  {doc['customer_name']}  <{doc['email']}>  {doc['status']}"]
    lines += [f"  {r['kind']:<13} {r['name']}  ({r['state']})" for r in doc["resources"]]
    _emit(as_json, doc, "\n".join(lines))


@customer_app.command("usage")
def customer_usage(
    customer_id: str,
    month: Annotated[str | None, typer.Option(help="YYYY-MM; default this month.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of text.")] = False,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Worksets by state, vCPU-hours, storage, estimated and actual cost for one month."""
    from stamen.customers.cloud import open_clients
    from stamen.customers.settings import CustomerSettings
    from stamen.customers.usage import Month, monthly_usage, to_csv

    async def usage(pool: asyncpg.Pool) -> Any:
        which = Month.parse(month) if month else Month.of(datetime.now(UTC))
        async with open_clients(CustomerSettings()) as aws:
            return await monthly_usage(pool, aws.s3, customer_id, which)

    report = _run(as_json, _with_pool(state_dir, usage))
    if csv:
        typer.echo(to_csv([report]), nl=False)
        return
    doc = report.as_dict()
    _emit(as_json, doc, "\n".join(f"{k}: {v}" for k, v in doc.items()))


@api_key_app.command("create")
def api_key_create(
    customer_id: str,
    name: str,
    ttl_days: Annotated[int | None, typer.Option(help="Days until it expires.")] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; it is shown once and stored only as a hash."""
    from stamen.auth.api_keys import ApiKeyService, CreatedApiKey

    async def create(pool: asyncpg.Pool) -> CreatedApiKey:
        return await ApiKeyService(pool).create(customer_id, name, ttl_days=ttl_days)

    created = _run(as_json, _with_pool(state_dir, create))
    doc = {"key": created.key, **created.record.__dict__}
    _emit(as_json, doc, f"{created.key}\n(shown once; expires {created.record.expires_at:%Y-%m-%d})")


@api_key_app.command("ls")
def api_key_ls(customer_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """A tenant's live keys (never the secrets)."""
    from stamen.auth.api_keys import ApiKeyService

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return [k.__dict__ for k in await ApiKeyService(pool).list_keys(customer_id)]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['id']}  {r['prefix']}  {r['name']:<24} expires {r['expires_at']:%Y-%m-%d}" for r in rows
    )
    _emit(as_json, rows, text or "no keys")


@api_key_app.command("revoke")
def api_key_revoke(
    customer_id: str, key_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke a key at once."""
    from stamen.auth.api_keys import ApiKeyService

    async def revoke(pool: asyncpg.Pool) -> dict[str, Any]:
        return dict((await ApiKeyService(pool).revoke(customer_id, key_id)).__dict__)

    doc = _run(as_json, _with_pool(state_dir, revoke))
    _emit(as_json, doc, f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    """Add the customer commands to `app`."""
    app.add_typer(customer_app, name="customer")
    app.add_typer(api_key_app, name="api-key")
