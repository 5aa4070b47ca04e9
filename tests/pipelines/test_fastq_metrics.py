"""The FASTQ reader of the qc step: numbers, gzip detection, and every kind of malformed input."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from stamen.pipelines.fastq_qc.qc import MalformedFastq, fastq_metrics

GOOD = b"@r1\nACGTN\n+\nIIII#\n@r2 desc\nggcc\n+r2 desc\n!!!!\n"


def write(tmp_path: Path, content: bytes, name: str = "reads.fastq") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("gzipped", [False, True])
def test_metrics_of_a_small_file(tmp_path: Path, gzipped: bool) -> None:
    # gzip is detected from the content, whatever the name says.
    path = write(tmp_path, gzip.compress(GOOD) if gzipped else GOOD, "reads.fq")
    metrics = fastq_metrics(path)
    assert (metrics.read_count, metrics.total_bases) == (2, 9)
    assert (metrics.gc_bases, metrics.acgt_bases) == (6, 8)  # N is not counted; lower case is
    assert metrics.gc_percent == pytest.approx(75.0)
    assert metrics.quality_sum == 4 * 40 + 2 + 4 * 0
    assert metrics.mean_quality == pytest.approx(162 / 9)


def test_windows_line_endings_and_trailing_blank_lines_are_accepted(tmp_path: Path) -> None:
    metrics = fastq_metrics(write(tmp_path, GOOD.replace(b"\n", b"\r\n") + b"\n\n"))
    assert (metrics.read_count, metrics.total_bases) == (2, 9)


def test_an_empty_file_has_no_reads(tmp_path: Path) -> None:
    metrics = fastq_metrics(write(tmp_path, b""))
    assert metrics.read_count == 0 and metrics.gc_percent is None and metrics.mean_quality is None


@pytest.mark.parametrize(
    ("content", "record", "line", "problem"),
    [
        (b"r1\nACGT\n+\nIIII\n", 1, 1, "does not start with '@'"),
        (GOOD + b"@r3\nACGT\n+\n", 3, 11, "truncated"),
        (GOOD + b"@r3\nACGT\n-\nIIII\n", 3, 11, "does not start with '+'"),
        (GOOD + b"@r3\nACGT\n+\nIII\n", 3, 12, "the quality has 3 characters but the sequence has 4"),
        (GOOD + b"@r3\nAC1T\n+\nIIII\n", 3, 10, "invalid base '1'"),
        (GOOD + b"@r3\nACGT\n+\nII I\n", 3, 12, "outside Phred+33"),
        (GOOD + b"\n@r3\nACGT\n+\nIIII\n", 3, 10, "text after a blank line"),
    ],
)
def test_malformed_fastq_names_record_and_line(
    tmp_path: Path, content: bytes, record: int, line: int, problem: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(MalformedFastq) as raised:
        fastq_metrics(path)
    assert (raised.value.record, raised.value.line) == (record, line)
    assert problem in str(raised.value)
    assert str(path) in str(raised.value)


def test_broken_gzip_is_reported_as_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, gzip.compress(GOOD * 50)[:-30], "reads.fastq.gz")
    with pytest.raises(MalformedFastq, match="broken gzip data"):
        fastq_metrics(path)
