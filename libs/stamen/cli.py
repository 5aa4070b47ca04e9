"""The `stamen` command. Every command takes --json for scripts; errors name the problem and the fix."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml

from stamen.settings import Settings

if TYPE_CHECKING:
    from stamen.stack.launcher import EmbeddedStack

app = typer.Typer(help="stamen: event-driven orchestration of genomics worksets.", no_args_is_help=True)
worksets_app = typer.Typer(help="Inspect worksets.", no_args_is_help=True)
app.add_typer(worksets_app, name="worksets")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
StateDirOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="Folder for the embedded stack's data.")
]
T = TypeVar("T")


class CliError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _emit(as_json: bool, data: Any, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _fail(as_json: bool, code: str, message: str) -> None:
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "message": message}}))
    else:
        typer.echo(f"error [{code}]: {message}", err=True)
    raise typer.Exit(1)


def _settings(state_dir: Path | None) -> Settings:
    settings = Settings()
    if state_dir is not None:
        settings.state_dir = state_dir
    return settings


def _database_url(settings: Settings) -> str:
    """The configured DATABASE_URL, else the one the running embedded stack wrote down."""
    if settings.database_url:
        return settings.database_url
    from stamen.stack.launcher import read_stack_file

    doc = read_stack_file(settings.state_dir.resolve())
    if doc and doc.get("launcher_pid"):
        _use_embedded_aws(doc)
        _use_embedded_pepper(settings.state_dir.resolve())
        _use_embedded_auth(doc)
        return str(doc["database_url"])
    raise CliError(
        "NO_DATABASE",
        f"no database: set DATABASE_URL, or start the embedded stack with `stamen up` "
        f"(looked for {settings.state_dir.resolve() / 'stack.json'})",
    )


def _nats_url(settings: Settings) -> str:
    """The configured NATS_URL, else the one the running embedded stack wrote down."""
    if settings.nats_url:
        return settings.nats_url
    from stamen.stack.launcher import read_stack_file

    doc = read_stack_file(settings.state_dir.resolve())
    if doc and doc.get("launcher_pid"):
        return str(doc["nats_url"])
    raise CliError(
        "NO_NATS",
        f"no NATS server: set NATS_URL, or start the embedded stack with `stamen up` "
        f"(looked for {settings.state_dir.resolve() / 'stack.json'})",
    )


def _use_embedded_aws(stack: dict[str, Any]) -> None:
    """Commands that talk to AWS (customers, S3) use the running stack's emulator, as its services do."""
    import os

    if "moto" in stack.get("embedded", []) and not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ["AWS_ENDPOINT_URL"] = str(stack["aws_endpoint_url"])
        # moto accepts any credentials; real ones must never be sent to it.
        os.environ["AWS_ACCESS_KEY_ID"] = "testing"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
        os.environ.setdefault("STAMEN_COGNITO_CREATE_POOL", "true")


def _use_embedded_auth(stack: dict[str, Any]) -> None:
    """User commands find the user pool `stamen up --auth` made (unless the environment names one)."""
    import os

    auth = stack.get("auth") or {}
    if auth.get("user_pool_id") and not os.environ.get("STAMEN_COGNITO_USER_POOL_ID"):
        os.environ["STAMEN_COGNITO_USER_POOL_ID"] = str(auth["user_pool_id"])
        os.environ["STAMEN_COGNITO_REGION"] = str(auth["region"])


def _use_embedded_pepper(state_dir: Path) -> None:
    """API-key commands hash keys as the running stack's portal does: with its pepper."""
    import os

    from stamen.stack.secrets import API_KEY_PEPPER, SECRETS_DIR

    path = state_dir / SECRETS_DIR / API_KEY_PEPPER
    if not os.environ.get("STAMEN_API_KEY_PEPPER") and path.exists():
        os.environ["STAMEN_API_KEY_PEPPER"] = path.read_text().strip()


def _run(as_json: bool, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async command body; known errors become `error [CODE]: message` and exit 1."""
    try:
        return asyncio.run(fn())
    except CliError as exc:
        _fail(as_json, exc.code, str(exc))
    except OSError as exc:
        _fail(as_json, "CONNECTION_FAILED", f"could not reach a server: {exc}")
    raise AssertionError("unreachable")


@app.command()
def up(
    state_dir: StateDirOpt = None,
    demo: Annotated[bool, typer.Option(help="Submit the demo workset once everything is up.")] = True,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Sign-in required (Cognito on the embedded moto), as in "
            "production; add users with `stamen user add`.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start the whole system on this machine and keep it running until Ctrl-C."""
    from stamen.logs import configure_logging
    from stamen.stack.launcher import EmbeddedStack
    from stamen.stack.status import render_status, stack_status

    settings = _settings(state_dir)
    configure_logging(settings.log_level, "console", service="launcher")
    import os

    auth = auth or os.environ.get("STAMEN_AUTH_ENABLED", "").lower() in ("1", "true", "yes")
    stack = EmbeddedStack(settings, settings.state_dir, auth=auth)

    def progress(msg: str) -> None:
        if as_json:
            typer.echo(json.dumps({"progress": msg}))
        else:
            typer.echo(f"-> {msg}")

    try:
        endpoints = stack.start_servers(progress)
        progress(f"migrations applied: {', '.join(stack.migrations_applied) or 'none needed'}")
        progress("starting services: " + ", ".join(stack.services))
        stack.start_services()
        status = asyncio.run(stack_status(endpoints.database_url, stack.state_dir, wait_ready=90.0))
        if demo:
            demo_id = asyncio.run(_submit_demo(endpoints.database_url, settings.region))
            progress(f"demo workset submitted: {demo_id}")
            status = asyncio.run(
                stack_status(endpoints.database_url, stack.state_dir, wait_for_workset=demo_id)
            )
    except BaseException as exc:  # Ctrl-C during start-up included: never leave servers behind
        stack.stop()
        if isinstance(exc, Exception):
            _fail(as_json, getattr(exc, "code", "STACK_START_FAILED"), str(exc))
        raise
    # Before telling anyone it is up, so a Ctrl-C right after the status screen stops it in order.
    stack.install_stop_handlers()
    sign_in = None
    if stack.auth_pool is not None:
        ready = _ready_sign_in(stack) if "moto" in endpoints.embedded else None
        sign_in = _sign_in_help(stack.portal_url(), stack.state_dir, ready)
    if as_json:  # one line per record, so a program can read the stream as it comes
        typer.echo(json.dumps({"portal_url": stack.portal_url(), **status, "sign_in": sign_in}, default=str))
    else:
        typer.echo(render_status(status, stack.portal_url()))
        if sign_in:
            typer.echo("\n".join(sign_in))
        typer.echo("Press Ctrl-C to stop everything.")
    sys.stdout.flush()
    stack.supervise_forever()
    if not as_json:
        typer.echo("stopped.")


DEMO_OPERATOR_EMAIL = "operator@stamen.localhost"
DEMO_SIGN_IN_FILE = "demo-sign-in.json"


def _ready_sign_in(stack: EmbeddedStack) -> tuple[str, str]:
    """The embedded emulator's ready operator account (e-mail, password), made at the first `stamen up
    --auth` and kept, with its password, in the state folder (0600): this machine's emulator only, never
    on a real Cognito pool."""
    from stamen.auth import AuthSettings, cognito
    from stamen.auth.errors import UserExists
    from stamen.cli_users import temporary_password

    pool, endpoints = stack.auth_pool, stack.endpoints
    assert pool is not None and endpoints is not None, "called once the stack's servers and pool are up"
    file = stack.state_dir / DEMO_SIGN_IN_FILE
    saved = json.loads(file.read_text()) if file.exists() else {}
    password = str(saved.get("password") or temporary_password())

    async def make() -> None:
        async with cognito.cognito_client(pool.region, endpoints.aws_endpoint_url, emulator=True) as client:
            with contextlib.suppress(UserExists):  # already there (a restart): same password
                await cognito.admin_create_user(
                    client,
                    user_pool_id=pool.user_pool_id,
                    email=DEMO_OPERATOR_EMAIL,
                    customer_id=None,
                    temporary_password=temporary_password(),
                )
            await cognito.admin_set_password(
                client, user_pool_id=pool.user_pool_id, username=DEMO_OPERATOR_EMAIL, password=password
            )
            await cognito.add_operator(
                client,
                user_pool_id=pool.user_pool_id,
                username=DEMO_OPERATOR_EMAIL,
                group=AuthSettings().cognito_operator_group,
            )

    asyncio.run(make())
    file.touch(mode=0o600)
    file.write_text(json.dumps({"email": DEMO_OPERATOR_EMAIL, "password": password}))
    return DEMO_OPERATOR_EMAIL, password


def _sign_in_help(portal_url: str | None, state_dir: Path, ready: tuple[str, str] | None = None) -> list[str]:
    """What a new operator of an auth-on stack does next (docs/api.md, "Auth on, locally")."""
    url = (portal_url or "").rstrip("/")
    lines = []
    if ready is not None:
        lines += [
            f"Ready sign-in (this machine's emulator only; kept in {state_dir / DEMO_SIGN_IN_FILE}):",
            f"  {url}/  e-mail {ready[0]}  password {ready[1]}  (an operator)",
        ]
    lines += [
        "Sign-in is required. Make yourself an account (an operator here), then sign in:",
        f"  export STAMEN_URL={url}",
    ]
    if state_dir != Path(".stamen").resolve():
        lines.append(f"  export STAMEN_STATE_DIR={state_dir}")
    return [
        *lines,
        "  stamen user add you@example.org --operator   # prints a temporary password (the emulator mails nothing)",
        "  stamen login --email you@example.org         # asks for it, then for a password of your own",
    ]


async def _submit_demo(database_url: str, region: str) -> str:
    from stamen.inputs.demo import DEMO_BUCKET, DEMO_TENANT
    from stamen.intake import submit_workset
    from stamen.store.db import create_pool
    from stamen.tenancy import BucketGrantRepository

    spec = yaml.safe_load((resources.files("stamen.demo") / "demo_workset.yaml").read_text())
    pool = await create_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:  # the demo tenant's inputs and report live in the demo bucket
            await BucketGrantRepository(conn).grant(
                DEMO_TENANT,
                DEMO_BUCKET,
                "read-write",
                granted_by="stamen-up",
                note="the demo workset's inputs and report",
            )
        result = await submit_workset(
            pool,
            tenant_id=DEMO_TENANT,
            name=spec["name"],
            spec=spec,
            region=region,
            source="cli",
            actor="stamen-up",
            idempotency_key=f"demo-{int(time.time())}",
        )
    finally:
        await pool.close()
    return result.workset_id


@app.command()
def service(name: str) -> None:
    """Run one service in the foreground (what the supervisor and containers do)."""
    import runpy

    from stamen.stack.supervisor import SERVICES

    if name not in SERVICES:
        _fail(False, "UNKNOWN_SERVICE", f"unknown service {name!r}; choose one of: {', '.join(SERVICES)}")
    sys.argv = [f"services.{name}"]
    runpy.run_module(f"services.{name}", run_name="__main__", alter_sys=True)


@app.command()
def migrate(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Apply database migrations (safe to run twice, and from several processes at once)."""
    import asyncpg

    from stamen.store.migrate import apply_migrations

    async def run() -> list[str]:
        conn = await asyncpg.connect(_database_url(_settings(state_dir)))
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = _run(as_json, run)
    _emit(as_json, {"applied": applied}, f"applied: {', '.join(applied)}" if applied else "schema is current")


@app.command()
def relay(state_dir: StateDirOpt = None) -> None:
    """Run an outbox relay on its own (services run one each; more may run side by side)."""
    from stamen.logs import configure_logging
    from stamen.relay_main import run_relay
    from stamen.service.loop import run_on_loop

    settings = _settings(state_dir)
    configure_logging(settings.log_level, settings.log_format, service="relay")
    run_on_loop(run_relay(settings), settings.event_loop)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="Workset spec, YAML or JSON.")],
    tenant: Annotated[str, typer.Option(help="Tenant (customer) id.")] = "demo",
    idempotency_key: Annotated[str | None, typer.Option(help="Same key twice makes one workset.")] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a workset spec file (YAML, or JSON for *.json): read and checked as the API does."""
    from stamen.inputs.submission import SubmissionOutcome, submit_document
    from stamen.intake import IntakeRefused
    from stamen.store.db import create_pool

    try:
        document = file.read_bytes()
    except OSError as exc:
        _fail(as_json, "FILE_UNREADABLE", f"{file}: {exc.strerror}")
    settings = _settings(state_dir)

    async def run() -> SubmissionOutcome:
        pool = await create_pool(_database_url(settings), max_size=2)
        try:
            return await submit_document(
                pool, document, media="json" if file.suffix.lower() == ".json" else "yaml", tenant=tenant,
                idempotency_key=idempotency_key, region=settings.region, source="cli", actor="cli",
            )  # fmt: skip
        except IntakeRefused as exc:
            raise CliError(exc.code, str(exc)) from None
        finally:
            await pool.close()

    outcome = _run(as_json, run)
    if not outcome.accepted:
        reply = outcome.as_reply()
        if as_json:
            typer.echo(json.dumps({"error": reply}, indent=2))
        else:
            typer.echo(f"error [VALIDATION_FAILED]: {file}: {reply['message']}", err=True)
            for f in outcome.findings:
                typer.echo(
                    f"  {f.severity:<7} {f.code:<14} {f.field or '-'}: {f.message}\n          fix: {f.fix}",
                    err=True,
                )
        raise typer.Exit(1)
    verb = "submitted" if outcome.created else "already submitted (same idempotency key)"
    data = {"workset_id": outcome.workset_id, "created": outcome.created, "state": outcome.state}
    _emit(as_json, data, f"{verb}: {outcome.workset_id} ({outcome.state})")


@app.command()
def status(state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Show the embedded stack's components and worksets by state."""
    from stamen.stack.status import render_status, stack_status

    settings = _settings(state_dir)

    async def run() -> dict[str, Any]:
        return await stack_status(_database_url(settings), settings.state_dir.resolve())

    data = _run(as_json, run)
    _emit(as_json, data, render_status(data, None))


@worksets_app.command("ls")
def worksets_ls(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    limit: int = 50,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List worksets, newest first."""
    from stamen.store.db import create_pool
    from stamen.store.unit_of_work import UnitOfWork

    async def run() -> list[dict[str, Any]]:
        pool = await create_pool(_database_url(_settings(state_dir)), max_size=1)
        try:
            async with UnitOfWork(pool) as uow:
                rows = await uow.worksets.list_for_tenant(tenant, limit)
                parked = await uow.dead_letters.reasons_for([w.id for w in rows])
        finally:
            await pool.close()
        return [
            {
                "id": w.id,
                "tenant": w.tenant_id,
                "name": w.name,
                "state": w.state.value,
                "dead_letter_reason": parked.get(w.id),
            }
            for w in rows
        ]

    rows = _run(as_json, run)
    text = "\n".join(workset_line(r) for r in rows) or "no worksets"
    _emit(as_json, rows, text)


def workset_line(row: dict[str, Any]) -> str:
    """One workset in a listing; a dead-lettered one says why stamen stopped (local and remote CLI)."""
    state = row["state"] + (f" ({row['dead_letter_reason']})" if row.get("dead_letter_reason") else "")
    return f"{row['id']}  {row['tenant']:<12} {state:<32} {row['name']}"


@worksets_app.command("show")
def worksets_show(workset_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """One workset with its full state history (who, when, why)."""
    from stamen.inputs.repository import IntakeRepository
    from stamen.store.db import create_pool
    from stamen.store.errors import WorksetNotFound
    from stamen.store.unit_of_work import UnitOfWork

    async def run() -> dict[str, Any]:
        pool = await create_pool(_database_url(_settings(state_dir)), max_size=1)
        try:
            async with UnitOfWork(pool) as uow:
                try:
                    ws = await uow.worksets.get(workset_id)
                except WorksetNotFound as exc:
                    raise CliError(exc.code, str(exc)) from None
                history = await uow.worksets.history(workset_id)
                validation = await IntakeRepository(uow.connection).validation_for(workset_id)
                estimate = validation["estimate"] if validation else None
                actual = await uow.actuals.for_workset(workset_id)
        finally:
            await pool.close()
        return {
            "id": ws.id,
            "tenant": ws.tenant_id,
            "name": ws.name,
            "state": ws.state.value,
            "version": ws.version,
            "cluster": ws.cluster,
            "placement_reason": ws.placement_reason,
            "attempt": ws.attempt,
            "retry_count": ws.retry_count,
            "estimate": estimate,
            "actual": actual,
            "history": [h.__dict__ for h in history],
        }

    data = _run(as_json, run)
    lines = [f"{data['id']}  {data['name']}  tenant={data['tenant']}  state={data['state']}"]
    lines += [
        f"  v{h['version']:<3} {h['at']:%Y-%m-%d %H:%M:%S}  {h['from_state'] or '-':>12} -> {h['to_state']:<14}"
        f" by {h['actor']}: {h['reason']}"
        for h in data["history"]
    ]
    if data["estimate"]:
        est = data["estimate"]
        lines.append(
            f"  estimate: {est.get('vcpu_hours', '?')} vCPU-h, {est.get('duration_minutes', '?')} min, "
            f"${est.get('cost_usd_median', '?')} (median)"
        )
    if data["actual"]:
        act = data["actual"]
        lines.append(
            f"  actual:   {act['vcpu_hours'] or 0:.4f} vCPU-h over {act['step_runs']} step runs "
            f"({act['attempts']} attempts), {(act['elapsed_seconds'] or 0) / 60:.1f} min of steps"
        )
    _emit(as_json, data, "\n".join(lines))


def main() -> None:
    from stamen import (
        cli_buckets,
        cli_customers,
        cli_diagnose,
        cli_intake,
        cli_nats,
        cli_notify,
        cli_outbox,
        cli_regions,
        cli_remote,
        cli_scheduler,
        cli_users,
    )

    cli_intake.register(app)
    cli_outbox.register(app)
    cli_buckets.register(app)
    cli_diagnose.register(app)
    cli_regions.register(app)
    cli_users.register(app)
    cli_scheduler.register(app, worksets_app)
    cli_customers.register(app)
    cli_nats.register(app)
    cli_notify.register(app)
    cli_remote.register(app)
    try:
        app()
    except CliError as exc:  # raised while checking arguments, before any work started
        as_json = "--json" in sys.argv
        print(
            json.dumps({"error": {"code": exc.code, "message": str(exc)}})
            if as_json
            else f"error [{exc.code}]: {exc}",
            file=sys.stdout if as_json else sys.stderr,
        )
        raise SystemExit(1) from None
