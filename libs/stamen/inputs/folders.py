"""Reading a Daylily workset folder (in S3 or on disk) into the importer's inputs.

A folder holds daylily_work.yaml, stage_samples.tsv or one *analysis_samples_manifest.tsv, and
optionally daylily_info.yaml. A file over the importer's size limit (by its listed size) is reported
and not read; others are read only up to the limit plus one byte, in case one grew since the listing.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stamen.domain.workset import TENANT_ID_PATTERN
from stamen.inputs.objects import ObjectMissing, ObjectStore, StorageError
from stamen.worksets import Finding, ImportResult, import_daylily
from stamen.worksets.daylily_import import INFO_FILE, MANIFEST_FILE, WORK_FILE, check_work_file, is_work_file
from stamen.worksets.documents import MAX_TSV_BYTES, MAX_YAML_BYTES, load_yaml_mapping
from stamen.worksets.findings import finding

MANIFEST_SUFFIX = "analysis_samples_manifest.tsv"


@dataclass
class DaylilyDocuments:
    work: bytes | None = None
    manifest: bytes | None = None
    info: bytes | None = None
    manifest_name: str | None = None
    findings: list[Finding] = field(default_factory=list)


def choose_manifest(names: list[str]) -> tuple[str | None, list[Finding]]:
    """stage_samples.tsv when present, else the only *analysis_samples_manifest.tsv."""
    if MANIFEST_FILE in names:
        return MANIFEST_FILE, []
    candidates = sorted(n for n in names if n.endswith(MANIFEST_SUFFIX))
    if len(candidates) == 1:
        return candidates[0], []
    if not candidates:
        return None, [
            finding(
                "VAL-DAY-004",
                "samples",
                f"no {MANIFEST_FILE} or *{MANIFEST_SUFFIX} in the folder",
                source=MANIFEST_FILE,
            )
        ]
    return None, [
        finding("VAL-DAY-005", "samples", "manifests found: " + ", ".join(candidates), source=MANIFEST_FILE)
    ]


def import_documents(docs: DaylilyDocuments, *, tenant: str | None, default_name: str | None) -> ImportResult:
    if docs.work is None or docs.manifest is None:
        return ImportResult(spec=None, findings=docs.findings)
    imported = import_daylily(docs.work, docs.manifest, docs.info, tenant=tenant, default_name=default_name)
    return ImportResult(spec=imported.spec, findings=[*docs.findings, *imported.findings])


def folder_tenant(info: bytes | None, *, default: str) -> str:
    """Whose workset an unmapped folder is: daylily_info.yaml's customer_id when it is a valid tenant id,
    else `default` (STAMEN_DROP_DEFAULT_TENANT). An unreadable info file is the importer's to report."""
    if info is not None:
        customer = (load_yaml_mapping(info, source=INFO_FILE).value or {}).get("customer_id")
        if isinstance(customer, str) and TENANT_ID_PATTERN.fullmatch(customer.strip()):
            return customer.strip()
    return default


def folder_name(prefix: str) -> str:
    return posixpath.basename(prefix.rstrip("/"))


def _too_large(name: str, size: int, limit: int) -> Finding | None:
    """VAL-INPUT-002 with the file's real size, so an oversized file is never downloaded at all."""
    if size <= limit:
        return None
    return finding("VAL-INPUT-002", "", f"{name} is {size} bytes; the limit is {limit} bytes", source=name)


async def read_s3_folder(store: ObjectStore, bucket: str, prefix: str) -> DaylilyDocuments:
    """Raises `StorageError` when the folder cannot be listed (missing bucket, no access, unreachable)."""
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    sizes = {obj.key[len(prefix) :]: obj.size for obj in await store.list_objects(bucket, prefix)}
    names = list(sizes)
    docs = DaylilyDocuments()
    manifest_name, docs.findings = choose_manifest(names)
    if WORK_FILE not in names:
        docs.findings.append(
            finding("VAL-DAY-004", "", f"no {WORK_FILE} in s3://{bucket}/{prefix}", source=WORK_FILE)
        )

    async def fetch(name: str, limit: int) -> bytes | None:
        oversized = _too_large(name, sizes[name], limit)
        if oversized is not None:
            docs.findings.append(oversized)
            return None
        try:
            return await store.read(bucket, prefix + name, length=limit + 1)
        except ObjectMissing:  # deleted between the listing and the read
            docs.findings.append(finding("VAL-DAY-004", "", f"{name} disappeared while reading", source=name))
            return None

    if WORK_FILE in names:
        docs.work = await fetch(WORK_FILE, MAX_YAML_BYTES)
    if manifest_name is not None:
        docs.manifest, docs.manifest_name = await fetch(manifest_name, MAX_TSV_BYTES), manifest_name
    if INFO_FILE in names:
        docs.info = await fetch(INFO_FILE, MAX_YAML_BYTES)
    return docs


def read_local_folder(path: Path, *, manifest: str | None = None) -> DaylilyDocuments:
    """`manifest`: this file of the folder is the manifest, whatever the others are called."""
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    docs = DaylilyDocuments()
    manifest_name, docs.findings = (manifest, []) if manifest else choose_manifest(names)

    def read(name: str, limit: int) -> bytes | None:
        oversized = _too_large(name, (path / name).stat().st_size, limit)
        if oversized is not None:
            docs.findings.append(oversized)
            return None
        with (path / name).open("rb") as handle:
            return handle.read(limit + 1)

    if WORK_FILE in names:
        docs.work = read(WORK_FILE, MAX_YAML_BYTES)
    else:
        docs.findings.append(finding("VAL-DAY-004", "", f"no {WORK_FILE} in {path}", source=WORK_FILE))
    if manifest_name is not None:
        docs.manifest, docs.manifest_name = read(manifest_name, MAX_TSV_BYTES), manifest_name
    if INFO_FILE in names:
        docs.info = read(INFO_FILE, MAX_YAML_BYTES)
    return docs


DaylilyFileKind = Literal["manifest", "work", "info"]


def daylily_file_kind(path: Path) -> DaylilyFileKind | None:
    """Which Daylily file this is, by its name, else by its content (a tab-separated header naming SAMPLE_ID;
    a YAML mapping of daylily_work.yaml keys). None: not a Daylily file (a workset spec, say)."""
    if path.name == WORK_FILE:
        return "work"
    if path.name == INFO_FILE:
        return "info"
    if path.name == MANIFEST_FILE or path.name.endswith(MANIFEST_SUFFIX):
        return "manifest"
    with path.open("rb") as handle:
        head = handle.read(MAX_YAML_BYTES + 1)
    first_line = head.split(b"\n", 1)[0]
    if b"\t" in first_line and b"SAMPLE_ID" in first_line:
        return "manifest"
    document = load_yaml_mapping(head, source=path.name).value
    return "work" if document is not None and is_work_file(document) else None


@dataclass
class LocalImport:
    """A local file or folder as the importer sees it, and what the report should add about how it was read."""

    imported: ImportResult
    note: str | None = None


def import_local_daylily_file(
    path: Path, kind: DaylilyFileKind, *, tenant: str | None, default_tenant: str
) -> LocalImport:
    """One Daylily file given on its own: with the rest of its folder when the folder has it, else as what it
    is (a manifest alone, with default settings; a work or info file, whose own findings are all there is),
    saying which in the note and what to run for the whole workset."""
    folder = path.parent
    names = {p.name for p in folder.iterdir() if p.is_file()}
    whole = f"`stamen validate {folder}/`"
    if kind == "manifest":
        name = path.name.removesuffix(".tsv").removesuffix("." + MANIFEST_SUFFIX.removesuffix(".tsv"))
        if WORK_FILE in names:
            docs = read_local_folder(folder, manifest=path.name)
            owner = tenant or folder_tenant(docs.info, default=default_tenant)
            return LocalImport(
                import_documents(docs, tenant=owner, default_name=folder_name(str(folder))),
                f"Validated the Daylily folder {folder}/ with {path.name} as its manifest.",
            )
        imported = import_daylily(
            b"{}",
            path.read_bytes(),
            None,
            tenant=tenant or default_tenant,
            default_name=_UNSAFE_NAME.sub("-", name) or "manifest",
        )
        return LocalImport(
            imported,
            f"Validated {path.name} alone, with default workset settings (no {WORK_FILE} "
            f"beside it). For the whole workset put {WORK_FILE} (and {INFO_FILE}) next to "
            f"it and run {whole}.",
        )
    manifest_name, _ = choose_manifest(sorted(names))
    if path.name in (WORK_FILE, INFO_FILE) and WORK_FILE in names and manifest_name is not None:
        docs = read_local_folder(folder)
        owner = tenant or folder_tenant(docs.info, default=default_tenant)
        return LocalImport(
            import_documents(docs, tenant=owner, default_name=folder_name(str(folder))),
            f"{path.name} is a Daylily {kind} file: validated its folder {folder}/ "
            f"({WORK_FILE}, {manifest_name}{', ' + INFO_FILE if INFO_FILE in names else ''}).",
        )
    data = path.read_bytes()
    findings = check_work_file(data) if kind == "work" else load_yaml_mapping(data, source=INFO_FILE).findings
    missing = [] if WORK_FILE in names else [WORK_FILE]
    if manifest_name is None:
        missing.append(f"{MANIFEST_FILE} (or *{MANIFEST_SUFFIX})")
    findings.append(
        finding(
            "VAL-DAY-004",
            "",
            f"{path.name} is one file of a Daylily workset; {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not beside it",
            source=path.name,
            fix=f"Put the workset's files in one folder and run {whole}.",
        )
    )
    return LocalImport(
        ImportResult(spec=None, findings=findings),
        f"{path.name} was checked on its own; a workset needs its folder: run {whole}.",
    )


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


__all__ = [
    "DaylilyDocuments",
    "LocalImport",
    "StorageError",
    "choose_manifest",
    "daylily_file_kind",
    "folder_name",
    "folder_tenant",
    "import_documents",
    "import_local_daylily_file",
    "read_local_folder",
    "read_s3_folder",
]
