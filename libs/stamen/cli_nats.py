"""NATS credential commands: per-tenant lab-system credentials, and rendering nats-server's
authorization block for a server stamen does not run itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import CliError, JsonOpt, StateDirOpt, _database_url, _emit, _run, _settings
from stamen.cli_scheduler import _with_pool

nats_credential_app = typer.Typer(
    help="NATS credentials for lab systems: publish only to stamen.intake.<tenant>.", no_args_is_help=True
)
nats_auth_app = typer.Typer(
    help="nats-server's authorization block, rendered from PostgreSQL.", no_args_is_help=True
)


def _doc(record: Any) -> dict[str, Any]:
    from stamen.natsauth import inbox_prefix, intake_subject

    return {
        **record.__dict__,
        "intake_subject": intake_subject(record.customer_id),
        "inbox_prefix": inbox_prefix(record.customer_id),
    }


@nats_credential_app.command("create")
def nats_credential_create(
    customer_id: str,
    name: str,
    seed_file: Annotated[
        Path | None, typer.Option(help="Write the seed to this new file (mode 0600) instead of printing it.")
    ] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an NKEY credential; its seed is shown (or written) once, only the public key is stored."""
    from stamen.natsauth import CreatedNatsCredential, NatsCredentialService

    # Claim the seed file before the credential exists, so a credential is never left without its seed.
    seed_fd: int | None = None
    if seed_file is not None:
        try:
            seed_fd = os.open(seed_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CliError(
                "FILE_EXISTS", f"{seed_file} exists; choose a new path (a seed is never overwritten)"
            ) from None
        except OSError as exc:
            raise CliError("FILE_UNWRITABLE", f"cannot create {seed_file}: {exc.strerror}") from None

    async def create(pool: asyncpg.Pool) -> CreatedNatsCredential:
        return await NatsCredentialService(pool).create(customer_id, name)

    try:
        created = _run(as_json, _with_pool(state_dir, create))
    except BaseException:
        if seed_fd is not None:
            os.close(seed_fd)
            assert seed_file is not None
            seed_file.unlink()
        raise
    doc = _doc(created.record)
    if seed_fd is not None:
        with os.fdopen(seed_fd, "w") as f:
            f.write(created.seed + "\n")
        doc["seed_file"] = str(seed_file)
        shown = f"seed written to {seed_file}"
    else:
        doc["seed"] = created.seed
        shown = f"{created.seed}\n(the seed: shown once)"
    _emit(
        as_json,
        doc,
        f"{shown}\npublic key {created.record.public_key}; publish to {doc['intake_subject']} with "
        f"inbox prefix {doc['inbox_prefix']}",
    )


@nats_credential_app.command("ls")
def nats_credential_ls(customer_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """A tenant's live NATS credentials (public keys only)."""
    from stamen.natsauth import NatsCredentialService

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return [_doc(r) for r in await NatsCredentialService(pool).list_credentials(customer_id)]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(f"{r['id']}  {r['public_key']}  {r['name']}" for r in rows)
    _emit(as_json, rows, text or "no NATS credentials")


@nats_credential_app.command("revoke")
def nats_credential_revoke(
    customer_id: str, credential_id: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False
) -> None:
    """Revoke a credential: nats-server drops its connections at the next render and reload."""
    from stamen.natsauth import NatsCredentialService

    async def revoke(pool: asyncpg.Pool) -> dict[str, Any]:
        return _doc(await NatsCredentialService(pool).revoke(customer_id, credential_id))

    doc = _run(as_json, _with_pool(state_dir, revoke))
    _emit(as_json, doc, f"revoked {credential_id}")


def _service_user(state_dir: Path | None) -> Any:
    from stamen.natsauth import ServiceUser

    settings = _settings(state_dir)
    if settings.nats_service_password is None or not settings.nats_service_password.get_secret_value():
        raise CliError(
            "NATS_SERVICE_PASSWORD_MISSING",
            "set STAMEN_NATS_SERVICE_PASSWORD to the password the services use in NATS_URL "
            f"(nats://{settings.nats_service_user}:<password>@host:4222)",
        )
    return ServiceUser.from_password(
        settings.nats_service_password.get_secret_value(), settings.nats_service_user
    )


@nats_auth_app.command("render")
def nats_auth_render(
    output: Annotated[
        Path | None, typer.Option(help="Write here (mode 0600) instead of standard output.")
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="Keep running; re-render on every change (needs --output).")
    ] = False,
    reload_pid: Annotated[
        int | None, typer.Option(help="With --watch: send SIGHUP to this nats-server after each change.")
    ] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render the authorization block (services' user + every live tenant credential) for nats-server.

    Include it from the server's config (`include "stamen-auth.conf"`) and reload the server
    (`nats-server --signal reload`) after each change, or let --watch --reload-pid do both."""
    from stamen.natsauth.service import NatsCredentialService
    from stamen.natsauth.sync import NatsAuthSync, render_to_file

    if watch and output is None:
        raise CliError("OUTPUT_REQUIRED", "--watch needs --output FILE (the file nats-server includes)")
    service = _service_user(state_dir)
    database_url = _database_url(_settings(state_dir))
    if not watch:
        if output is None:

            async def render(pool: asyncpg.Pool) -> str:
                return await NatsCredentialService(pool).render(service)

            text = _run(as_json, _with_pool(state_dir, render))
            if as_json:
                _emit(as_json, {"config": text}, text)
            else:
                typer.echo(text, nl=False)
            return

        async def write() -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                assert output is not None
                return await render_to_file(conn, service, output)
            finally:
                await conn.close()

        changed = _run(as_json, write)
        _emit(
            as_json,
            {"output": str(output), "changed": changed},
            f"{output}: {'written' if changed else 'unchanged'}",
        )
        return

    def reload() -> None:
        if reload_pid is not None:
            os.kill(reload_pid, signal.SIGHUP)

    async def run_watch() -> None:
        assert output is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await NatsAuthSync(database_url, service, output, reload).run(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_watch())


def register(app: typer.Typer) -> None:
    app.add_typer(nats_credential_app, name="nats-credential")
    app.add_typer(nats_auth_app, name="nats-auth")
