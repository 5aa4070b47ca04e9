from __future__ import annotations

import zlib

from stamen.worksets import check_read_pairs, sniff_fastq, sniff_object
from stamen.worksets.sniff import _records_one_by_one, _well_formed_records, sniff_bam, sniff_cram

from .conftest import fastq_records, gz


def test_clean_gzip_fastq_sample_teaches_the_estimate() -> None:
    text = fastq_records(200, mate=1)
    data = gz(text)
    # A ranged read: the first part of the object only, cut mid-stream; that is not a problem.
    result = sniff_fastq(data[: len(data) * 2 // 3], object_size=len(data))
    assert result.findings == []
    assert result.gzip and result.reads_sampled > 0
    assert result.mean_read_length == 100
    assert result.compression_ratio is not None and result.compression_ratio > 1
    # bytes per base of the complete records: (header + 100 + 2 + 100 + 4 newlines) / 100
    header_len = len(b"@A00123:8:H5KCNDSXY:1:1101:1000:2000 1:N:0:ATCACG")
    assert result.text_bytes_per_base == (header_len + 100 + 1 + 100 + 4) / 100


def test_whole_plain_fastq_and_bgzf_members() -> None:
    text = fastq_records(10)
    assert sniff_fastq(text, object_size=len(text)).reads_sampled == 10
    multi = gz(fastq_records(5)) + gz(fastq_records(5)) + gz(b"")  # BGZF-like: several members + EOF block
    result = sniff_fastq(multi, object_size=len(multi))
    assert result.findings == [] and result.reads_sampled == 10


def test_corrupt_gzip_is_not_a_truncated_sample() -> None:
    data = bytearray(gz(fastq_records(300)))
    data[40:60] = b"\xff" * 20
    assert [f.code for f in sniff_fastq(bytes(data)).findings] == ["SNF-GZ-002"]


def test_fastq_record_problems_have_their_own_codes() -> None:
    cases = {
        b">r1\nACGT\n+\nIIII\n": "SNF-FMT-002",  # named FASTQ, content FASTA: said so
        b"@r1\nACGT\n-\nIIII\n": "SNF-FQ-002",
        b"@r1\nACGT\n+\nII I\n": "SNF-FQ-004",
        b"@r1\nACXT\n+\nIIII\n": "SNF-FQ-005",
        b"": "SNF-FQ-006",
        b"\x00\x01\x02BAM\n": "SNF-FQ-007",
    }
    for data, code in cases.items():
        assert [f.code for f in sniff_fastq(data, object_size=len(data)).findings] == [code], data


def test_long_read_bigger_than_the_sample_is_only_a_warning() -> None:
    data = b"@read1\n" + b"ACGT" * 1000
    findings = sniff_fastq(data, object_size=10 * len(data)).findings
    assert [(f.code, f.severity) for f in findings] == [("SNF-FQ-006", "warning")]


def test_read_names_pair_up() -> None:
    r1 = sniff_fastq(gz(fastq_records(5, mate=1)))
    r2 = sniff_fastq(gz(fastq_records(5, mate=2)))
    assert r1.read_names[0] == "A00123:8:H5KCNDSXY:1:1101:1000:2000"
    assert check_read_pairs(r1, r2) == []
    old_style = sniff_fastq(b"@HWI:1:2#0/1\nACGT\n+\nIIII\n@HWI:1:3#0/1\nACGT\n+\nIIII\n")
    old_mate = sniff_fastq(b"@HWI:1:2#0/2\nACGT\n+\nIIII\n@HWI:1:4#0/2\nACGT\n+\nIIII\n")
    assert [f.code for f in check_read_pairs(old_style, old_mate)] == ["SNF-PAIR-001"]


def _bgzf_block(payload: bytes) -> bytes:
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    extra = b"BC\x02\x00" + (len(body) + 25).to_bytes(2, "little")
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + len(extra).to_bytes(2, "little") + extra
    return header + body + zlib.crc32(payload).to_bytes(4, "little") + len(payload).to_bytes(4, "little")


def test_alignment_magic_bytes() -> None:
    assert sniff_cram(b"CRAM\x03\x01" + bytes(20)).findings == []
    assert [f.code for f in sniff_cram(b"CRAM\x02\x01").findings] == ["SNF-CRAM-002"]
    assert sniff_bam(_bgzf_block(b"BAM\x01" + bytes(40))).findings == []
    assert [f.code for f in sniff_bam(_bgzf_block(b"@HD\tVN:1.6\n")).findings] == ["SNF-FMT-002"]  # SAM text
    assert [f.code for f in sniff_bam(_bgzf_block(b"\x00\x01\x02\x03\x04")).findings] == ["SNF-BAM-002"]
    assert [f.code for f in sniff_bam(b"BAM\x01").findings] == ["SNF-BAM-001"]
    assert [f.code for f in sniff_object("s3://b-1/x.txt", b"hello").findings] == ["SNF-FMT-001"]


def _lines(text: bytes) -> tuple[list[bytes], int]:
    lines = text.split(b"\n")[:-1]
    return lines, len(lines) // 4


def test_all_records_checked_at_once_say_what_one_by_one_says() -> None:
    """The usual sample's records are checked in bulk; the figures are those of the record-by-record path,
    and any record with something to report sends the sample down that path (which names the record)."""
    clean = fastq_records(50, mate=1) + b"@A00123:8:X:1:1:1:1/1\nACGTN\n+comment\n!!#~I\n"
    lines, count = _lines(clean)
    names: list[str] = []
    one_by_one = _records_one_by_one(lines, count, names, lambda code, record, message: None)
    bulk = _well_formed_records(lines, count)
    assert bulk is not None and bulk[:4] == one_by_one and bulk[4] == names
    for defect in (b"A0\nACGT\n+\nIIII\n", b"@r\nACGT\nx\nIIII\n", b"@r\nACXT\n+\nIIII\n",
                   b"@r\nACGT\n+\nIII\n", b"@r\nACGT\n+\nII I\n", b"\nACGT\n+\nIIII\n", b"@r\nACGT\n\nIIII\n"):  # fmt: skip
        assert _well_formed_records(*_lines(clean + defect)) is None, defect
