"""`stamen bucket`: which S3 buckets a tenant may use besides its own (operators' grants, in PostgreSQL)."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import asyncpg
import typer

from stamen.cli import JsonOpt, StateDirOpt, _emit, _run
from stamen.cli_scheduler import _with_pool

bucket_app = typer.Typer(
    help="S3 buckets tenants may use: their own, and read-only / read-write grants.", no_args_is_help=True
)


def _doc(grant: Any) -> dict[str, Any]:
    return {
        "tenant": grant.tenant_id,
        "bucket": grant.bucket,
        "access": grant.access,
        "granted_by": grant.granted_by,
        "granted_at": grant.granted_at,
        "note": grant.note,
    }


@bucket_app.command("grant")
def bucket_grant(
    tenant: Annotated[str, typer.Argument(help="The tenant (customer id) to grant.")],
    bucket: Annotated[str, typer.Argument(help="The S3 bucket name (no s3://).")],
    read_write: Annotated[
        bool,
        typer.Option("--read-write/--read-only", help="May the tenant's worksets write there (export_uri)?"),
    ] = False,
    note: Annotated[str, typer.Option(help="Why, for whoever reads the grant later.")] = "",
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Let a tenant's worksets read (or read and write) a bucket that is not its own, e.g. shared references."""
    from stamen.tenancy import BucketGrantRepository

    async def grant(pool: asyncpg.Pool) -> dict[str, Any]:
        async with pool.acquire() as conn:
            granted, created = await BucketGrantRepository(conn).grant(
                tenant,
                bucket,
                "read-write" if read_write else "read-only",
                granted_by=f"cli:{getpass.getuser()}",
                note=note,
            )
        return {**_doc(granted), "created": created}

    doc = _run(as_json, _with_pool(state_dir, grant))
    _emit(
        as_json,
        doc,
        f"{'granted' if doc['created'] else 'changed'}: {doc['tenant']} may use "
        f"s3://{doc['bucket']}/ {doc['access']}",
    )


@bucket_app.command("revoke")
def bucket_revoke(tenant: str, bucket: str, state_dir: StateDirOpt = None, as_json: JsonOpt = False) -> None:
    """Take a grant back: worksets naming the bucket are refused from now on (the scheduler checks again)."""
    from stamen.tenancy import BucketGrantRepository

    async def revoke(pool: asyncpg.Pool) -> dict[str, Any]:
        async with pool.acquire() as conn:
            return _doc(await BucketGrantRepository(conn).revoke(tenant, bucket))

    doc = _run(as_json, _with_pool(state_dir, revoke))
    _emit(as_json, doc, f"revoked: {tenant} may no longer use s3://{bucket}/ (unless it is its own)")


@bucket_app.command("ls")
def bucket_ls(
    tenant: Annotated[str | None, typer.Argument(help="One tenant: its own bucket and its grants.")] = None,
    state_dir: StateDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every grant, or everything one tenant may use (its own bucket included)."""
    from stamen.tenancy import BucketGrantRepository

    async def ls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            repo = BucketGrantRepository(conn)
            if tenant is None:
                return [{**_doc(g), "source": "grant"} for g in await repo.grants()]
            rights = await repo.tenant_buckets(tenant)
            return [
                {
                    "tenant": tenant,
                    "bucket": r.bucket,
                    "access": r.access,
                    "source": r.source,
                    "granted_by": r.granted_by,
                    "note": r.note,
                }
                for r in rights.rights
            ]

    rows = _run(as_json, _with_pool(state_dir, ls))
    text = "\n".join(
        f"{r['tenant']:<20} s3://{r['bucket']}/  {r['access']:<10} {r['source']:<5} {r['note']}" for r in rows
    )
    _emit(as_json, rows, text or "no buckets")


def register(app: typer.Typer) -> None:
    app.add_typer(bucket_app, name="bucket")
