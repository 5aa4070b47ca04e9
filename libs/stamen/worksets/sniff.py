"""Content sniffing over the first bytes of an input object (the caller does a ranged read).

A sample usually ends mid-stream, so "the gzip stream stops here" is normal; only when the caller says
the sample is the whole object (`object_size`) is an unfinished stream a truncated upload. What the
sample teaches (compression ratio, read length, FASTQ bytes per base) feeds the cost estimate.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stamen.worksets.findings import Finding, finding

GZIP_MAGIC = b"\x1f\x8b"
CRAM_MAGIC = b"CRAM"
BAM_MAGIC = b"BAM\x01"
# Bounds the work on a hostile sample: a few MiB of zeros can inflate to gigabytes.
MAX_INFLATED_BYTES = 32 * 1024 * 1024
MAX_RECORDS = 20_000
READ_NAMES_KEPT = 8
_IUPAC = frozenset(b"ACGTUNRYKMSWBDHVacgtunrykmswbdhv")
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09}

InputFormat = Literal["fastq", "cram", "bam", "unknown"]


class SniffResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: InputFormat
    gzip: bool = False
    sample_bytes: int
    compression_ratio: float | None = None
    reads_sampled: int = 0
    mean_read_length: float | None = None
    text_bytes_per_base: float | None = None
    read_names: list[str] = []
    findings: list[Finding] = []


@dataclass
class _Inflated:
    payload: bytes = b""
    consumed: int = 0
    complete: bool = False
    findings: list[Finding] = field(default_factory=list)


def _inflate(data: bytes, *, whole_object: bool, path: str) -> _Inflated:
    """Inflate the gzip members (BGZF is a series of them) found in `data`."""
    result = _Inflated()
    chunks: list[bytes] = []
    produced = 0
    position = 0
    while produced < MAX_INFLATED_BYTES:
        if not data[position:].strip(b"\x00"):
            result.complete = True  # every member ended; zero padding after the last one is harmless
            break
        if data[position:position + 2] != GZIP_MAGIC:
            result.findings.append(finding("SNF-GZ-002", path, f"bytes at offset {position} are not a "
                                           "gzip member"))
            break
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        member = data[position:]
        try:
            chunk = inflater.decompress(member, MAX_INFLATED_BYTES - produced)
        except zlib.error as exc:
            result.findings.append(finding("SNF-GZ-002", path, f"gzip data at offset {position} is corrupt: "
                                           f"{exc}"))
            break
        chunks.append(chunk)
        produced += len(chunk)
        used = len(member) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
        result.consumed += used
        if not inflater.eof:
            # Input used up mid-stream: the normal end of a sample, a truncated upload for a whole object.
            if whole_object and not inflater.unconsumed_tail:
                result.findings.append(finding("SNF-GZ-003", path, "the object ends in the middle of a gzip "
                                               "stream"))
            break
        position += used
    result.payload = b"".join(chunks)
    return result


def _read_name(header: bytes) -> str:
    """Read name without the '@', Illumina comment fields, or a /1 /2 mate suffix."""
    name = header[1:].split(maxsplit=1)[0].decode("ascii", "replace") if header[1:].strip() else ""
    return name[:-2] if name.endswith(("/1", "/2")) else name


def _check_fastq(text: bytes, *, complete: bool, path: str) -> tuple[dict[str, float | int], list[str],
                                                                     list[Finding]]:
    findings: list[Finding] = []
    names: list[str] = []
    if not text:
        return {}, names, [finding("SNF-FQ-006", path, "the object is empty", severity="error" if complete
                                   else "warning")]
    if any(byte not in _PRINTABLE for byte in text[:4096].replace(b"\n", b"").replace(b"\r", b"")):
        return {}, names, [finding("SNF-FQ-007", path)]
    lines = text.split(b"\n")
    if not complete:
        lines = lines[:-1]  # the last line may be cut off by the end of the sample
    elif lines and lines[-1] == b"":
        lines = lines[:-1]
    seen: set[str] = set()

    def report(code: str, record: int, message: str) -> None:
        if code not in seen:  # one finding per kind of problem: the first occurrence
            seen.add(code)
            findings.append(finding(code, path, f"record {record + 1}: {message}"))

    if not text.startswith(b"@"):
        report("SNF-FQ-001", 0, "the first line does not start with '@'")
        return {}, names, findings
    reads = bases = record_bytes = 0
    for record in range(min(len(lines) // 4, MAX_RECORDS)):
        header, sequence, separator, quality = (line.rstrip(b"\r") for line in lines[4 * record:4 * record + 4])
        if not header.startswith(b"@"):
            report("SNF-FQ-001", record, "header line does not start with '@'")
            break
        if not separator.startswith(b"+"):
            report("SNF-FQ-002", record, "third line does not start with '+'")
            break
        if any(base not in _IUPAC for base in sequence):
            report("SNF-FQ-005", record, "sequence has non-nucleotide characters")
        if len(quality) != len(sequence):
            report("SNF-FQ-003", record, f"quality has {len(quality)} characters, sequence {len(sequence)}")
        if quality and (min(quality) < 33 or max(quality) > 126):
            report("SNF-FQ-004", record, "quality characters outside '!'..'~'")
        if len(names) < READ_NAMES_KEPT:
            names.append(_read_name(header))
        reads += 1
        bases += len(sequence)
        record_bytes += sum(len(line) + 1 for line in lines[4 * record:4 * record + 4])
    if reads == 0 and not findings:
        report("SNF-FQ-006", 0, "no complete 4-line record in the sampled bytes")
        if not complete:
            # A long read (ONT, PacBio) can be bigger than the sample: not the file's fault.
            findings[-1] = findings[-1].model_copy(update={"severity": "warning"})
    stats: dict[str, float | int] = {"reads": reads}
    if reads and bases:
        stats["mean_read_length"] = bases / reads
        stats["text_bytes_per_base"] = record_bytes / bases
    return stats, names, findings


def sniff_fastq(data: bytes, *, object_size: int | None = None, field: str = "",
                named_gzip: bool | None = None) -> SniffResult:
    """Sniff the first bytes of a FASTQ object (gzip/BGZF or plain).

    `object_size` (when known) tells whether `data` is the whole object; `named_gzip` whether the
    object's name ends in .gz, so a name/content mismatch is reported."""
    whole = object_size is not None and len(data) >= object_size
    findings: list[Finding] = []
    is_gzip = data.startswith(GZIP_MAGIC)
    if named_gzip and not is_gzip:
        findings.append(finding("SNF-GZ-001", field, "named .gz but the content has no gzip magic"))
    ratio: float | None = None
    text = data
    complete = whole
    if is_gzip:
        inflated = _inflate(data, whole_object=whole, path=field)
        findings.extend(inflated.findings)
        if any(f.code == "SNF-GZ-002" for f in inflated.findings):
            return SniffResult(format="fastq", gzip=True, sample_bytes=len(data), findings=findings)
        if not inflated.payload:
            findings.append(finding("SNF-GZ-004", field, f"{len(data)} bytes decompressed to nothing"))
            return SniffResult(format="fastq", gzip=True, sample_bytes=len(data), findings=findings)
        text = inflated.payload
        complete = inflated.complete and whole
        ratio = len(inflated.payload) / inflated.consumed if inflated.consumed else None
    stats, names, fastq_findings = _check_fastq(text, complete=complete, path=field)
    findings.extend(fastq_findings)
    return SniffResult(
        format="fastq", gzip=is_gzip, sample_bytes=len(data), compression_ratio=ratio,
        reads_sampled=int(stats.get("reads", 0)), mean_read_length=stats.get("mean_read_length"),
        text_bytes_per_base=stats.get("text_bytes_per_base"), read_names=names, findings=findings)


def sniff_cram(data: bytes, *, field: str = "") -> SniffResult:
    findings: list[Finding] = []
    if not data.startswith(CRAM_MAGIC):
        findings.append(finding("SNF-CRAM-001", field, f"starts with {data[:4]!r}, not b'CRAM'"))
    elif len(data) > 4 and data[4] < 3:
        findings.append(finding("SNF-CRAM-002", field, f"CRAM version {data[4]}.{data[5] if len(data) > 5 else 0}"))
    return SniffResult(format="cram", sample_bytes=len(data), findings=findings)


def sniff_bam(data: bytes, *, object_size: int | None = None, field: str = "") -> SniffResult:
    if not data.startswith(GZIP_MAGIC):
        return SniffResult(format="bam", sample_bytes=len(data), findings=[finding("SNF-BAM-001", field)])
    whole = object_size is not None and len(data) >= object_size
    inflated = _inflate(data, whole_object=whole, path=field)
    findings = list(inflated.findings)
    if not findings:
        if len(inflated.payload) < len(BAM_MAGIC):
            findings.append(finding("SNF-GZ-004", field, f"{len(data)} bytes decompressed to "
                                    f"{len(inflated.payload)} bytes"))
        elif not inflated.payload.startswith(BAM_MAGIC):
            findings.append(finding("SNF-BAM-002", field, f"decompressed data starts with "
                                    f"{inflated.payload[:4]!r}"))
    ratio = len(inflated.payload) / inflated.consumed if inflated.consumed else None
    return SniffResult(format="bam", gzip=True, sample_bytes=len(data), compression_ratio=ratio,
                       findings=findings)


def sniff_object(uri: str, data: bytes, *, object_size: int | None = None, field: str = "") -> SniffResult:
    """Dispatch on the object's name: FASTQ, CRAM or BAM."""
    name = uri.lower()
    if name.endswith(".cram"):
        return sniff_cram(data, field=field)
    if name.endswith(".bam"):
        return sniff_bam(data, object_size=object_size, field=field)
    stem = name.removesuffix(".gz")
    if stem.endswith((".fastq", ".fq")):
        return sniff_fastq(data, object_size=object_size, field=field, named_gzip=name.endswith(".gz"))
    return SniffResult(format="unknown", sample_bytes=len(data), findings=[finding(
        "SNF-FMT-001", field, f"cannot tell the format of {uri.rsplit('/', 1)[-1]}")])


def check_read_pairs(r1: SniffResult, r2: SniffResult, *, field: str = "") -> list[Finding]:
    """The first read names of R1 and R2 must be the same reads (mate suffixes already stripped)."""
    for index, (name1, name2) in enumerate(zip(r1.read_names, r2.read_names, strict=False)):
        if name1 != name2:
            return [finding("SNF-PAIR-001", field, f"read {index + 1}: R1 {name1!r} vs R2 {name2!r}")]
    return []
