"""Storage checks: every input object exists, is non-empty and readable, its first block sniffs as the
format its name says, R1/R2 pair up, and the reference genome's files are where the deployment keeps them.

Pure decisions live in `stamen.worksets` (sniffing, the findings catalogue); this module only fetches
what they need, concurrently but never more than `storage_concurrency` calls at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from stamen.inputs.objects import (
    ARCHIVE_CLASSES,
    ObjectInfo,
    ObjectMissing,
    ObjectStore,
    StorageError,
    gather_bounded,
)
from stamen.inputs.settings import IntakeSettings
from stamen.tenancy.buckets import TenantBuckets, may_access
from stamen.worksets import Finding, SniffResult, WorksetSpec, check_read_pairs, sniff_object
from stamen.worksets.findings import finding, has_errors
from stamen.worksets.registry import references
from stamen.worksets.rules import check_s3_uri
from stamen.worksets.sniff import TAIL_BYTES, GzipStreamCheck, check_gzip_end
from stamen.worksets.spec import input_files


@dataclass
class StorageReport:
    """What the storage checks found and learned (sizes, sniffs and bucket regions feed the estimate)."""

    findings: list[Finding] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    sniffs: dict[str, SniffResult] = field(default_factory=dict)
    bucket_regions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def unavailable(self) -> bool:
        """Some check could not run because storage did not answer (not the workset's fault)."""
        return any(f.code == "SNF-OBJ-006" for f in self.findings)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def reference_prefix(location: str, genome: str) -> str:
    """The reference location for one genome: placeholders filled, else the genome key appended."""
    info = references().genomes[genome]
    if "{genome}" in location or "{daylily_name}" in location:
        return location.replace("{genome}", genome).replace("{daylily_name}", info.daylily_name)
    return location.rstrip("/") + "/" + genome + "/"


class StorageChecker:
    def __init__(self, store: ObjectStore, settings: IntakeSettings | None = None) -> None:
        self._store = store
        self._settings = settings or IntakeSettings()

    async def check(self, spec: WorksetSpec, rights: TenantBuckets | None) -> StorageReport:
        """`rights`: the submitting tenant's buckets; an input it may not read is never fetched (so the report
        says nothing about whether it exists). None only for an operator's own tools (CLI, Python API)."""
        report = StorageReport()
        limit = asyncio.Semaphore(self._settings.storage_concurrency)
        # Each distinct object once (the hybrid manifest lists one Illumina pair for several units);
        # malformed URIs are the rules' business and are not fetched.
        first_path: dict[str, str] = {}
        for path, uri, _fmt in input_files(spec):
            if rights is not None and not may_access(rights, uri, "read"):
                continue  # S3-ACCESS-001 says so; asking S3 would tell whether another tenant's object exists
            if uri not in first_path and not check_s3_uri(uri, path, needs_key=True):
                first_path[uri] = path
        results = await gather_bounded(
            limit, *(self._check_object(uri, path) for uri, path in first_path.items())
        )
        for uri, (findings, size, sniff) in zip(first_path, results, strict=True):
            report.findings.extend(findings)
            if size is not None:
                report.sizes[uri] = size
            if sniff is not None:
                report.sniffs[uri] = sniff
        report.findings.extend(self._pairs(spec, report.sniffs))
        report.findings.extend(await self._reference(spec, limit, report.notes))
        buckets = sorted({split_s3_uri(uri)[0] for uri in report.sizes})
        regions = await gather_bounded(limit, *(self._store.bucket_region(b) for b in buckets))
        report.bucket_regions = {b: r for b, r in zip(buckets, regions, strict=True) if r}
        return report

    async def _check_object(
        self, uri: str, path: str
    ) -> tuple[list[Finding], int | None, SniffResult | None]:
        bucket, key = split_s3_uri(uri)
        try:
            head, start = await self._first_bytes(bucket, key)
            if head.size == 0:
                return [finding("SNF-OBJ-002", path, f"{uri} is empty (0 bytes)")], 0, None
            if (head.storage_class or "").upper() in ARCHIVE_CLASSES:
                return (
                    [finding("SNF-OBJ-005", path, f"{uri} is in storage class {head.storage_class}")],
                    head.size,
                    None,
                )
            data = (
                start
                if start is not None
                else await self._store.read(bucket, key, length=self._settings.sniff_bytes)
            )
            sniff = sniff_object(uri, data, object_size=head.size, field=path)
            findings = list(sniff.findings)
            if sniff.gzip and head.size > len(data) and not has_errors(findings):
                findings += await self._check_end(bucket, key, head.size, sniff, path)
        except StorageError as exc:
            return [finding(exc.code, path, str(exc))], None, None
        return findings, head.size, sniff

    async def _first_bytes(self, bucket: str, key: str) -> tuple[ObjectInfo, bytes | None]:
        """The object's facts with its first bytes from one ranged GET (was a HEAD, then the GET). When the
        GET cannot give them (an empty object has no range to give, an archived one refuses, or an error),
        the HEAD says what the object is, as before, and the bytes are read after it if still needed."""
        try:
            return await self._store.read_start(bucket, key, self._settings.sniff_bytes)
        except StorageError:
            return await self._store.head(bucket, key), None

    async def _check_end(
        self, bucket: str, key: str, size: int, sniff: SniffResult, path: str
    ) -> list[Finding]:
        """A cut past the sniffed start: one ranged read of the end; for plain gzip whose trailer cannot vouch
        for it, the whole object decompressed as it streams (bounded by gzip_verify_max_bytes)."""
        length = min(TAIL_BYTES, size)
        tail = await self._store.read(bucket, key, offset=size - length, length=length)
        end = check_gzip_end(
            tail, object_size=size, bgzf=sniff.bgzf, ratio=sniff.compression_ratio, field=path
        )
        if not end.stream_check_needed:
            return end.findings
        if size > self._settings.gzip_verify_max_bytes:
            return [
                finding(
                    "SNF-GZ-006",
                    path,
                    f"s3://{bucket}/{key} is plain gzip of {size} bytes whose trailer "
                    f"does not vouch for its end; only objects up to {self._settings.gzip_verify_max_bytes} "
                    "bytes are decompressed whole to check it",
                )
            ]
        check = GzipStreamCheck(path)
        async for chunk in self._store.stream(bucket, key):
            await asyncio.to_thread(check.feed, chunk)  # zlib releases the GIL: the loop keeps serving
            if check.findings:
                break
        return check.finish(size)

    @staticmethod
    def _pairs(spec: WorksetSpec, sniffs: dict[str, SniffResult]) -> list[Finding]:
        findings: list[Finding] = []
        for i, sample in enumerate(spec.samples):
            pairs = [(f"samples[{i}]", sample.r1, sample.r2)]
            pairs += [
                (f"samples[{i}].extra_fastq[{j}]", p.r1, p.r2) for j, p in enumerate(sample.extra_fastq)
            ]
            for path, r1, r2 in pairs:
                s1, s2 = sniffs.get(r1 or ""), sniffs.get(r2 or "")
                if s1 is not None and s2 is not None and s1.format == s2.format == "fastq":
                    findings.extend(check_read_pairs(s1, s2, field=path))
        return findings

    async def _reference(
        self, spec: WorksetSpec, limit: asyncio.Semaphore, notes: list[str]
    ) -> list[Finding]:
        location = self._settings.reference_location
        genome = spec.reference_genome
        if genome not in references().genomes:
            return []  # VAL-REF-001 already says so
        if not location:
            notes.append("Reference files were not checked: STAMEN_REFERENCE_LOCATION is not set.")
            return []
        if not location.startswith("s3://"):
            notes.append(
                f"Reference files were not checked: STAMEN_REFERENCE_LOCATION {location!r} is not "
                "an s3:// location."
            )
            return []
        expected = references().expected_objects(genome, reference_prefix(location, genome))

        async def probe(uri: str) -> StorageError | None:
            try:
                await self._store.head(*split_s3_uri(uri))
            except StorageError as exc:
                return exc
            return None

        outcomes = await gather_bounded(limit, *(probe(uri) for uri in expected))
        missing = [
            uri for uri, error in zip(expected, outcomes, strict=True) if isinstance(error, ObjectMissing)
        ]
        findings: list[Finding] = []
        if missing:
            names = ", ".join(uri.rsplit("/", 1)[-1] for uri in missing)
            findings.append(
                finding(
                    "VAL-REF-002",
                    "reference_genome",
                    f"{genome}: {len(missing)} of "
                    f"{len(expected)} files missing under "
                    f"{reference_prefix(location, genome)}: {names}",
                )
            )
        others = [error for error in outcomes if error is not None and not isinstance(error, ObjectMissing)]
        if others:  # bucket missing, no access, unreachable: one finding, the first reason
            findings.append(finding(others[0].code, "reference_genome", f"reference files: {others[0]}"))
        return findings
