"""Reading a Daylily workset folder (in S3 or on disk) into the importer's inputs.

A folder holds daylily_work.yaml, stage_samples.tsv or one *analysis_samples_manifest.tsv, and
optionally daylily_info.yaml. A file over the importer's size limit (by its listed size) is reported
and not read; others are read only up to the limit plus one byte, in case one grew since the listing.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from stamen.domain.workset import TENANT_ID_PATTERN
from stamen.inputs.objects import ObjectMissing, ObjectStore, StorageError
from stamen.worksets import Finding, ImportResult, import_daylily
from stamen.worksets.daylily_import import INFO_FILE, MANIFEST_FILE, WORK_FILE
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


def read_local_folder(path: Path) -> DaylilyDocuments:
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    docs = DaylilyDocuments()
    manifest_name, docs.findings = choose_manifest(names)

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


__all__ = [
    "DaylilyDocuments",
    "StorageError",
    "choose_manifest",
    "folder_name",
    "folder_tenant",
    "import_documents",
    "read_local_folder",
    "read_s3_folder",
]
