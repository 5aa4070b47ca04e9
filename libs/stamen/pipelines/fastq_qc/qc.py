"""fastq-qc step 2: per-file read metrics of every staged FASTQ (gzip or plain), streaming.

    python -m stamen.pipelines.fastq_qc.qc --manifest inputs/manifest.json --out qc/metrics.json

For each file: reads, bases, G+C and A+C+G+T base counts (GC% is over A/C/G/T only, so N does not
dilute it) and the sum of Phred+33 base qualities (mean quality = sum / bases). The file is read
line by line; memory does not grow with its size. A malformed FASTQ stops the step with exit code 1
and a message that names the file, the record number and the line number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
PHRED_OFFSET = 33
MAX_QUALITY_CHAR = 126
# IUPAC nucleotide codes (either case) and '.', which some tools use for no-call.
_VALID_BASES = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn."


class MalformedFastq(ValueError):
    def __init__(self, path: Path, record: int, line: int, problem: str) -> None:
        super().__init__(f"{path}: malformed FASTQ at record {record}, line {line}: {problem}")
        self.path, self.record, self.line, self.problem = path, record, line, problem


@dataclass
class ReadFileMetrics:
    path: str
    read_count: int = 0
    total_bases: int = 0
    gc_bases: int = 0
    acgt_bases: int = 0
    quality_sum: int = 0

    @property
    def gc_percent(self) -> float | None:
        return 100.0 * self.gc_bases / self.acgt_bases if self.acgt_bases else None

    @property
    def mean_quality(self) -> float | None:
        return self.quality_sum / self.total_bases if self.total_bases else None


def open_fastq(path: Path) -> BinaryIO:
    """A binary reader of `path`, decompressed if it is gzip (by content, not by name)."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    for line in handle:
        yield line.rstrip(b"\r\n")


def fastq_metrics(path: Path) -> ReadFileMetrics:
    metrics = ReadFileMetrics(path=str(path))
    line_number = 0
    try:
        with open_fastq(path) as handle:
            lines = _lines(handle)
            for header in lines:
                line_number += 1
                record = metrics.read_count + 1
                if not header:
                    for rest in lines:  # blank lines are only allowed at the very end
                        line_number += 1
                        if rest.strip():
                            raise MalformedFastq(path, record, line_number, "text after a blank line")
                    break
                if not header.startswith(b"@"):
                    raise MalformedFastq(path, record, line_number, "the header line does not start with '@'")
                record_lines: list[bytes] = []
                for line in lines:
                    line_number += 1
                    record_lines.append(line)
                    if len(record_lines) == 3:
                        break
                if len(record_lines) < 3:
                    raise MalformedFastq(
                        path,
                        record,
                        line_number,
                        "the file ends inside the record (truncated: fewer than 4 lines)",
                    )
                sequence, separator, quality = record_lines
                if not separator.startswith(b"+"):
                    raise MalformedFastq(
                        path, record, line_number - 1, "the third line does not start with '+'"
                    )
                if len(quality) != len(sequence):
                    raise MalformedFastq(
                        path, record, line_number,
                        f"the quality has {len(quality)} characters but the sequence has {len(sequence)}",
                    )  # fmt: skip
                if sequence.translate(None, _VALID_BASES):
                    bad = sequence.translate(None, _VALID_BASES)[:1].decode(errors="replace")
                    raise MalformedFastq(
                        path, record, line_number - 2, f"the sequence has an invalid base {bad!r}"
                    )
                if quality and (min(quality) < PHRED_OFFSET or max(quality) > MAX_QUALITY_CHAR):
                    raise MalformedFastq(
                        path, record, line_number, "a quality character is outside Phred+33 (!..~)"
                    )
                upper = sequence.upper()
                gc = upper.count(b"G") + upper.count(b"C")
                metrics.read_count += 1
                metrics.total_bases += len(sequence)
                metrics.gc_bases += gc
                metrics.acgt_bases += gc + upper.count(b"A") + upper.count(b"T")
                metrics.quality_sum += sum(quality) - PHRED_OFFSET * len(quality)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise MalformedFastq(
            path, metrics.read_count + 1, line_number + 1, f"broken gzip data ({exc})"
        ) from exc
    return metrics


def run_qc(manifest: dict[str, object]) -> dict[str, object]:
    samples = manifest.get("samples")
    if not isinstance(samples, list):
        raise ValueError("the manifest has no 'samples' list")
    results = []
    for sample in samples:
        files = []
        for read, path in sorted(sample["files"].items()):
            metrics = fastq_metrics(Path(path))
            print(
                f"qc: {sample['id']} {read}: {metrics.read_count} reads, {metrics.total_bases} bases",
                flush=True,
            )
            files.append({"read": read, **asdict(metrics)})
        results.append({"id": sample["id"], "files": files})
    return {"samples": results}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qc", description="Read metrics of every staged FASTQ.")
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        metrics = run_qc(json.loads(args.manifest.read_text(encoding="utf-8")))
    except MalformedFastq as exc:
        print(f"qc: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"qc: error: cannot read the staged inputs: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(f".{args.out.name}.partial")
    temporary.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
