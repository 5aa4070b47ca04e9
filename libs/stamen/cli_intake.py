"""Intake commands (validate, schema, generate-yaml): registered on the main `stamen` app.

Exit codes: 0 valid (warnings allowed), 1 the workset has errors, 2 the input could not be read.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stamen.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TenantOpt = Annotated[
    str | None, typer.Option(help="Tenant submitting the workset (replaces the document's).")
]
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def _fail(as_json: bool, code: str, message: str, exit_code: int = EXIT_UNREADABLE) -> None:
    if as_json:
        typer.echo(json.dumps({"error": {"code": code, "message": message}}))
    else:
        typer.echo(f"error [{code}]: {message}", err=True)
    raise typer.Exit(exit_code)


def _s3_endpoint(settings: Settings) -> tuple[str | None, bool]:
    """AWS_ENDPOINT_URL, else the running embedded stack's moto (then with dummy credentials)."""
    if settings.aws_endpoint_url:
        return settings.aws_endpoint_url, False
    from stamen.stack.launcher import read_stack_file

    doc = read_stack_file(settings.state_dir.resolve())
    if doc and doc.get("launcher_pid") and doc.get("aws_endpoint_url"):
        return str(doc["aws_endpoint_url"]), "moto" in (doc.get("embedded") or [])
    return None, False


def render_report(target: str, report: Any) -> str:
    findings = report.findings
    errors = sum(f.severity == "error" for f in findings)
    lines = [
        f"{target}: {'valid' if report.ok else 'INVALID'} - {errors} error(s), {len(findings) - errors} "
        f"warning(s){' (strict)' if report.strict else ''}{' (dry run)' if report.dry_run else ''}"
    ]
    for f in sorted(findings, key=lambda f: (f.severity != "error", f.field)):
        where = f" [{f.source}]" if f.source else ""
        lines.append(f"  {f.severity:<7} {f.code:<14} {f.field or '-'}{where}: {f.message}")
        lines.append(f"          fix: {f.fix}")
    if report.note:
        lines.append(f"note: {report.note}")
    cost = report.estimate
    if cost is not None:
        lines.append(
            f"estimate ({cost.pipeline}, {cost.region}): ${cost.cost_usd_median:.2f} median "
            f"(${cost.cost_usd_low:.2f}-${cost.cost_usd_high:.2f}), {cost.duration_minutes:.0f} min, "
            f"{cost.vcpu_hours:.1f} vCPU-h, {cost.gbases:.2f} Gbases, {cost.storage_gb:.1f} GB storage"
            + (
                f", {cost.transfer_gb:.1f} GB cross-region (${cost.transfer_usd:.2f})"
                if cost.transfer_gb
                else ""
            )
        )
        lines += [f"  caveat: {c}" for c in cost.caveats]
    return "\n".join(lines)


def _import_local(path: Path, tenant: str | None) -> Any:
    """A folder, a Daylily file (manifest, daylily_work.yaml, daylily_info.yaml: read as what it is), or a
    workset spec; returns a LocalImport (what was imported, and a note on how)."""
    from stamen.inputs.folders import (
        LocalImport,
        daylily_file_kind,
        folder_name,
        folder_tenant,
        import_documents,
        import_local_daylily_file,
        read_local_folder,
    )
    from stamen.inputs.settings import IntakeSettings
    from stamen.inputs.submission import import_for_tenant

    # As for S3 folders: --tenant, else daylily_info.yaml's customer_id, else STAMEN_DROP_DEFAULT_TENANT.
    default_tenant = IntakeSettings().drop_default_tenant
    if path.is_dir():
        docs = read_local_folder(path)
        owner = tenant or folder_tenant(docs.info, default=default_tenant)
        return LocalImport(import_documents(docs, tenant=owner, default_name=folder_name(str(path))))
    kind = daylily_file_kind(path)
    if kind is not None:
        return import_local_daylily_file(path, kind, tenant=tenant, default_tenant=default_tenant)
    return LocalImport(
        import_for_tenant(
            path.read_bytes(),
            tenant=tenant,
            media="json" if path.suffix.lower() == ".json" else "yaml",
            source=path.name,
        )
    )


async def _validate(target: str, imported: Any, *, tenant: str | None, dry_run: bool, strict: bool) -> Any:
    """`imported` is the local file's or folder's import; None for an s3:// folder."""
    from stamen.inputs import IntakeSettings, StorageChecker, open_object_store, validate_imported
    from stamen.inputs.api import WorksetValidator

    settings = Settings()
    endpoint, emulator = _s3_endpoint(settings)
    if endpoint:
        settings = settings.model_copy(update={"aws_endpoint_url": endpoint})
    intake = IntakeSettings()
    if imported is None:
        bucket, _, prefix = target.removeprefix("s3://").partition("/")
        validator = WorksetValidator(settings=settings, intake=intake, strict=strict)
        return await validator.validate_workset_async(
            bucket=bucket, prefix=prefix, dry_run=dry_run, tenant=tenant, emulator=emulator
        )
    if dry_run:
        return await validate_imported(
            imported, checker=None, cluster_region=settings.region, rights=None, strict=strict, dry_run=True
        )
    async with open_object_store(settings, intake, emulator=emulator) as store:
        # An operator's tool with the operator's own AWS credentials: no tenant's bucket rights apply.
        return await validate_imported(
            imported,
            checker=StorageChecker(store, intake),
            cluster_region=settings.region,
            rights=None,
            strict=strict,
        )


def register(app: typer.Typer) -> None:
    """Add the intake commands to `app`."""

    @app.command()
    def validate(
        target: Annotated[
            str,
            typer.Argument(
                help="A spec FILE (YAML/JSON), a Daylily FOLDER, or s3://bucket/prefix "
                "of a Daylily workset folder."
            ),
        ],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Touch no storage: documents only.")] = False,
        strict: Annotated[bool, typer.Option("--strict", help="Warnings count as errors.")] = False,
        tenant: TenantOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Validate a workset: every finding with its fix, and the cost estimate. Exit 1 on errors."""
        from stamen.inputs.objects import StorageError

        if not target.startswith("s3://") and not Path(target).exists():
            _fail(as_json, "FILE_NOT_FOUND", f"{target} does not exist")
        try:
            local = None if target.startswith("s3://") else _import_local(Path(target), tenant)
            imported = local.imported if local is not None else None
            report = asyncio.run(_validate(target, imported, tenant=tenant, dry_run=dry_run, strict=strict))
            if local is not None and local.note:
                report = report.model_copy(
                    update={"note": " ".join(n for n in (local.note, report.note) if n)}
                )
        except OSError as exc:
            _fail(as_json, "FILE_UNREADABLE", f"{target}: {exc.strerror or exc}")
        except StorageError as exc:
            _fail(as_json, exc.code, str(exc))
        typer.echo(
            json.dumps(report.model_dump(mode="json"), indent=2) if as_json else render_report(target, report)
        )
        if not report.ok:
            raise typer.Exit(EXIT_INVALID)

    @app.command()
    def schema(as_json: JsonOpt = False) -> None:
        """The WorksetSpec JSON Schema (--json), or a summary of its fields."""
        from stamen.worksets import WorksetSpec

        document = WorksetSpec.model_json_schema()
        if as_json:
            typer.echo(json.dumps(document, indent=2))
            return
        required = set(document.get("required", []))
        lines = ["WorksetSpec fields (`stamen schema --json` prints the full JSON Schema):"]
        for name, prop in document["properties"].items():
            kind = (
                prop.get("type")
                or "/".join(
                    str(o.get("type", o.get("$ref", "?")).rsplit("/", 1)[-1]) for o in prop.get("anyOf", [])
                )
                or prop.get("$ref", "?").rsplit("/", 1)[-1]
            )
            enum = f" one of {', '.join(prop['enum'])}" if "enum" in prop else ""
            default = f" (default {json.dumps(prop['default'])})" if "default" in prop else ""
            lines.append(
                f"  {name:<18} {kind:<14} {'required' if name in required else 'optional'}{enum}{default}"
                + (f" - {prop['description']}" if prop.get("description") else "")
            )
        typer.echo("\n".join(lines))

    @app.command("generate-yaml")
    def generate_yaml(
        file: Annotated[Path, typer.Argument(help="Workset spec, YAML or JSON.")],
        out: Annotated[Path, typer.Option("--out", help="Folder to write the three Daylily files into.")],
        tenant: TenantOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Write daylily_work.yaml, stage_samples.tsv and daylily_info.yaml for a spec."""
        from stamen.inputs.submission import import_for_tenant
        from stamen.worksets import export_daylily
        from stamen.worksets.findings import has_errors

        try:
            data = file.read_bytes()
        except OSError as exc:
            _fail(as_json, "FILE_UNREADABLE", f"{file}: {exc.strerror or exc}")
        imported = import_for_tenant(
            data, tenant=tenant, media="json" if file.suffix.lower() == ".json" else "yaml", source=file.name
        )
        exported = export_daylily(imported.spec) if imported.spec is not None else None
        findings = [*imported.findings, *(exported.findings if exported else [])]
        written: dict[str, str] = {}
        if exported is not None and not has_errors(findings):
            out.mkdir(parents=True, exist_ok=True)
            for name, text in exported.files.items():
                (out / name).write_text(text, encoding="utf-8")
                written[name] = str(out / name)
        ok = bool(written)
        if as_json:
            typer.echo(
                json.dumps(
                    {"ok": ok, "files": written, "findings": [f.model_dump() for f in findings]}, indent=2
                )
            )
        else:
            lines = [f"wrote {path}" for path in written.values()] or [f"{file}: nothing written"]
            lines += [f"  {f.severity:<7} {f.code:<14} {f.field or '-'}: {f.message}" for f in findings]
            typer.echo("\n".join(lines))
        if not ok:
            raise typer.Exit(EXIT_INVALID)
