"""Broken inputs: each gives its own finding code, and none raises."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stamen.worksets import (
    Finding,
    check_read_pairs,
    estimate,
    export_daylily,
    import_daylily,
    import_form,
    sniff_fastq,
    sniff_object,
    validate_spec,
)
from stamen.worksets.findings import CODES

from .conftest import fastq_records, gz

GOOD_SAMPLE = {
    "id": "S1",
    "platform": "ILMN",
    "r1": "s3://reads-bucket/S1_R1.fastq.gz",
    "r2": "s3://reads-bucket/S1_R2.fastq.gz",
}


def _form(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "ws1",
        "tenant": "lsmc",
        "samples": [GOOD_SAMPLE],
        "export_uri": "s3://results-bucket/ws1/",
    }
    base.update(changes)
    return base


def _validated(document: object) -> list[Finding]:
    result = import_form(document)  # type: ignore[arg-type]
    return validate_spec(result.spec, prior_findings=result.findings).findings


def _daylily(
    work: str = "dy-r: -p help\n", manifest: str | None = None, info: str | None = None, tenant: str = "lsmc"
) -> list[Finding]:
    result = import_daylily(
        work,
        MANIFEST_HEADER + MANIFEST_ROW if manifest is None else manifest,
        info,
        tenant=tenant,
        default_name="w",
    )
    return (
        validate_spec(result.spec, prior_findings=result.findings).findings
        if result.spec
        else result.findings
    )


def _exported(**changes: object) -> list[Finding]:
    spec = import_form(_form(**changes)).spec
    assert spec is not None
    return export_daylily(spec).findings


def _truncated_gzip() -> list[Finding]:
    whole = gz(fastq_records(500))
    cut = whole[: len(whole) // 2]
    return sniff_fastq(cut, object_size=len(cut)).findings


def _short_quality() -> list[Finding]:
    text = b"@r1\nACGTACGT\n+\nIIII\n"
    return sniff_fastq(gz(text), object_size=len(gz(text))).findings


def _corrupt_gzip() -> list[Finding]:
    data = bytearray(gz(fastq_records(300)))
    data[40:60] = b"\xff" * 20
    return sniff_fastq(bytes(data)).findings


def _gzip_header_only() -> list[Finding]:
    # A ranged read that stopped inside the gzip header: nothing to inflate yet (a warning).
    data = gz(fastq_records(100))
    return sniff_fastq(data[:12], object_size=len(data)).findings


def _fastq(text: bytes) -> Callable[[], list[Finding]]:
    return lambda: sniff_fastq(text, object_size=len(text)).findings


def _over_budget() -> list[Finding]:
    spec = import_form(_form(max_cost_usd=0.01)).spec
    assert spec is not None
    sizes = {str(GOOD_SAMPLE["r1"]): 5_000_000_000, str(GOOD_SAMPLE["r2"]): 5_000_000_000}
    return validate_spec(spec, estimate=estimate(spec, object_sizes=sizes)).findings


def _unpaired_reads() -> list[Finding]:
    r1 = sniff_fastq(b"@HWI:1:2#0/1\nACGT\n+\nIIII\n")
    r2 = sniff_fastq(b"@HWI:1:3#0/2\nACGT\n+\nIIII\n")
    return check_read_pairs(r1, r2, field="samples[0]")


MANIFEST_HEADER = "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSEQ_VENDOR\tLANE\tILMN_R1_FQ\tILMN_R2_FQ\n"
MANIFEST_ROW = "R1\tS1\tE\tILMN\t1\ts3://b-1/a_R1.fq.gz\ts3://b-1/a_R2.fq.gz\n"
CRAM_SAMPLE = {
    "id": "S1",
    "platform": "ONT",
    "alignments": [{"uri": "s3://reads-bucket/S1.cram", "format": "cram"}],
}

# case -> (the code it must produce, the field that finding names, how to produce it). Every catalogued
# code that needs no storage is here; tests/intake/test_codes.py checks that, with the storage corpus,
# every code in stamen.worksets.findings.CODES is produced by some test.
CORPUS: dict[str, tuple[str, str, Callable[[], list[Finding]]]] = {
    # reading the document
    "non-UTF-8": ("VAL-INPUT-001", "", lambda: import_form("name: caf\u00e9\n".encode("latin-1")).findings),
    "10 MB of garbage": ("VAL-INPUT-002", "", lambda: import_form(bytes(range(256)) * 40960).findings),
    "invalid YAML": ("VAL-INPUT-003", "", lambda: import_form(b"name: [unclosed\n").findings),
    "YAML not a mapping": (
        "VAL-INPUT-004",
        "",
        lambda: import_form(b"- name: ws1\n- tenant: lsmc\n").findings,
    ),
    "empty document": ("VAL-INPUT-005", "", lambda: import_form(b"  \n").findings),
    "YAML alias bomb": ("VAL-INPUT-006", "", lambda: import_form(b"a: &x [1, 2]\nb: [*x, *x]\n").findings),
    "unknown field": ("VAL-INPUT-007", "colour", lambda: _validated(_form(colour="red"))),
    "alias given twice": ("VAL-INPUT-008", "dy-r", lambda: _daylily(work="dy-r: -p a\nrun: -p b\n")),
    "key given twice": ("VAL-INPUT-009", "dy-r", lambda: _daylily(work="dy-r: -p a\nnotes: x\ndy-r: -p b\n")),
    # structure
    "missing tenant": (
        "VAL-REQ-001",
        "tenant",
        lambda: _validated({"name": "ws1", "samples": [GOOD_SAMPLE]}),
    ),
    "no samples": ("VAL-REQ-002", "samples", lambda: _validated(_form(samples=[]))),
    "no export_uri": (
        "VAL-REQ-003",
        "export_uri",
        lambda: _validated({"name": "ws1", "tenant": "lsmc", "samples": [GOOD_SAMPLE]}),
    ),
    "number given as text": ("VAL-TYPE-001", "max_retries", lambda: _validated(_form(max_retries="many"))),
    "infinite cost limit": (
        "VAL-TYPE-002",
        "max_cost_usd",
        lambda: _validated(_form(max_cost_usd=float("inf"))),
    ),
    "more than 10,000 samples": (
        "VAL-RANGE-002",
        "samples",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "id": f"S{i}"} for i in range(10_001)])),
    ),
    "max_retries out of range": ("VAL-RANGE-001", "max_retries", lambda: _validated(_form(max_retries=11))),
    "unknown priority": ("VAL-ENUM-001", "priority", lambda: _validated(_form(priority="asap"))),
    # manifest TSV
    "manifest without SAMPLE_ID": ("VAL-TSV-001", "", lambda: _daylily(manifest="RUN_ID\tSAMPLE\nR1\tS1\n")),
    "row longer than the header": (
        "VAL-TSV-002",
        "samples[0]",
        lambda: _daylily(manifest=MANIFEST_HEADER + MANIFEST_ROW[:-1] + "\tstray\n"),
    ),
    "header without rows": ("VAL-TSV-003", "", lambda: _daylily(manifest=MANIFEST_HEADER)),
    "column named twice": (
        "VAL-TSV-004",
        "",
        lambda: _daylily(manifest="RUN_ID\tSAMPLE_ID\tSAMPLE_ID\nR1\tS1\tS1\n"),
    ),
    "unknown platform": (
        "VAL-TSV-005",
        "samples[0]",
        lambda: _daylily(
            manifest="RUN_ID\tSAMPLE_ID\tSEQ_VENDOR\tR1_FQ\nR1\tS1\tACME\ts3://b-1/a_R1.fq.gz\n"
        ),
    ),
    "empty SAMPLE_ID": (
        "VAL-TSV-006",
        "samples[0]",
        lambda: _daylily(
            manifest=MANIFEST_HEADER + "R1\t\tE\tILMN\t1\ts3://b-1/a_R1.fq.gz\ts3://b-1/a_R2.fq.gz\n"
        ),
    ),
    "R1 in two columns": (
        "VAL-TSV-007",
        "samples[0]",
        lambda: _daylily(
            manifest="RUN_ID\tSAMPLE_ID\tSEQ_VENDOR\tR1_FQ\tILMN_R1_FQ\n"
            "R1\tS1\tILMN\ts3://b-1/a_R1.fq.gz\ts3://b-1/b_R1.fq.gz\n"
        ),
    ),
    "CSV manifest": ("VAL-TSV-008", "", lambda: _daylily(manifest="RUN_ID,SAMPLE_ID\nR1,S1\n")),
    # Daylily files
    "info names an unknown sample": (
        "VAL-DAY-001",
        "sample_ids",
        lambda: _daylily(info="sample_ids: [S1, S9]\n"),
    ),
    "info names another customer": (
        "VAL-DAY-002",
        "tenant",
        lambda: _daylily(info="customer_id: lsmc\n", tenant="acme"),
    ),
    "stale stamen.unit_ids": (
        "VAL-DAY-003",
        "stamen.unit_ids",
        lambda: _daylily(info="stamen:\n  unit_ids: [a, b]\n"),
    ),
    # identifiers and references
    "workset name with spaces": ("VAL-ID-001", "name", lambda: _validated(_form(name="ws 1!"))),
    "upper-case tenant": ("VAL-ID-002", "tenant", lambda: _validated(_form(tenant="ACME"))),
    "sample id with a space": (
        "VAL-ID-003",
        "samples[0].id",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "id": "S 1"}])),
    ),
    "duplicate sample ids": (
        "VAL-ID-004",
        "samples[1].id",
        lambda: _validated(_form(samples=[GOOD_SAMPLE] * 2)),
    ),
    "sample id of a parent folder": (
        "VAL-ID-005",
        "samples[0].sample_id",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "sample_id": "../HG002"}])),
    ),
    "unknown reference": (
        "VAL-REF-001",
        "reference_genome",
        lambda: _validated(_form(reference_genome="mm10")),
    ),
    # inputs
    "R2 without R1": (
        "VAL-PAIR-001",
        "samples[0].r1",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r1": None}])),
    ),
    "missing R2": (
        "VAL-PAIR-002",
        "samples[0].r2",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r2": None}])),
    ),
    "R1 is R2": (
        "VAL-PAIR-003",
        "samples[0].r2",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r2": GOOD_SAMPLE["r1"]}])),
    ),
    "R1 and R2 swapped": (
        "VAL-PAIR-004",
        "samples[0].r1",
        lambda: _validated(
            _form(samples=[{**GOOD_SAMPLE, "r1": GOOD_SAMPLE["r2"], "r2": GOOD_SAMPLE["r1"]}])
        ),
    ),
    "sample without inputs": (
        "VAL-SAMPLE-001",
        "samples[0]",
        lambda: _validated(_form(samples=[{"id": "S1", "platform": "ILMN"}])),
    ),
    "FASTQ named .txt": (
        "VAL-SAMPLE-002",
        "samples[0].r1",
        lambda: _validated(
            _form(
                samples=[
                    {**GOOD_SAMPLE, "r1": "s3://reads-bucket/S1_R1.txt", "r2": "s3://reads-bucket/S1_R2.txt"}
                ]
            )
        ),
    ),
    "http URI": ("VAL-URI-001", "export_uri", lambda: _validated(_form(export_uri="https://example.org/x/"))),
    "bad bucket name": (
        "VAL-URI-002",
        "export_uri",
        lambda: _validated(_form(export_uri="s3://Bad_Bucket/x/")),
    ),
    "input is a prefix": (
        "VAL-URI-003",
        "samples[0].r1",
        lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r1": "s3://reads-bucket/"}])),
    ),
    "template placeholder": (
        "VAL-URI-004",
        "export_uri",
        lambda: _validated(_form(export_uri="s3://<BUCKET>/x/")),
    ),
    "URI with a space": (
        "VAL-URI-005",
        "export_uri",
        lambda: _validated(_form(export_uri="s3://results-bucket/my results/")),
    ),
    "key with a parent segment": (
        "VAL-URI-006",
        "export_uri",
        lambda: _validated(_form(export_uri="s3://results-bucket/a/../b/")),
    ),
    "bad label key": ("VAL-LABEL-001", "labels.Bad Key", lambda: _validated(_form(labels={"Bad Key": "x"}))),
    "label value of two lines": (
        "VAL-LABEL-002",
        "labels.team",
        lambda: _validated(_form(labels={"team": "a\nb"})),
    ),
    "bad e-mail": (
        "VAL-NOTIFY-001",
        "notifications.emails[0]",
        lambda: _validated(_form(notifications={"emails": ["nope"]})),
    ),
    "http webhook": (
        "VAL-NOTIFY-002",
        "notifications.webhook_url",
        lambda: _validated(_form(notifications={"webhook_url": "http://hooks.example.org/x"})),
    ),
    "fastq-qc of a CRAM": (
        "VAL-PIPE-001",
        "samples[0]",
        lambda: _validated(_form(pipeline="fastq-qc", samples=[CRAM_SAMPLE])),
    ),
    "estimate over budget": ("VAL-COST-001", "max_cost_usd", _over_budget),
    # export to Daylily
    "Illumina CRAM has no column": (
        "VAL-EXPORT-001",
        "samples[0].alignments[0].uri",
        lambda: _exported(
            samples=[{**GOOD_SAMPLE, "alignments": [{"uri": "s3://reads-bucket/S1.cram", "format": "cram"}]}]
        ),
    ),
    "tab in a manifest value": (
        "VAL-EXPORT-002",
        "samples[0]",
        lambda: _exported(samples=[{**GOOD_SAMPLE, "manifest_fields": {"NOTES": "a\tb"}}]),
    ),
    # content sniffing
    "not gzip despite .gz": (
        "SNF-GZ-001",
        "",
        lambda: sniff_object("s3://b-1/x_R1.fastq.gz", fastq_records(3)).findings,
    ),
    "corrupt gzip": ("SNF-GZ-002", "", _corrupt_gzip),
    "truncated gzip": ("SNF-GZ-003", "", _truncated_gzip),
    "gzip header only": ("SNF-GZ-004", "", _gzip_header_only),
    "second header without @": ("SNF-FQ-001", "", _fastq(b"@r1\nACGT\n+\nIIII\nr2\nACGT\n+\nIIII\n")),
    "FASTA, not FASTQ": ("SNF-FMT-002", "", _fastq(b">r1\nACGT\n+\nIIII\n")),
    "no + separator": ("SNF-FQ-002", "", _fastq(b"@r1\nACGT\n-\nIIII\n")),
    "quality shorter than sequence": ("SNF-FQ-003", "", _short_quality),
    "quality outside Phred+33": ("SNF-FQ-004", "", _fastq(b"@r1\nACGT\n+\nII I\n")),
    "sequence not nucleotides": ("SNF-FQ-005", "", _fastq(b"@r1\nACXT\n+\nIIII\n")),
    "empty FASTQ": ("SNF-FQ-006", "", _fastq(b"")),
    "binary, not FASTQ": ("SNF-FQ-007", "", _fastq(b"\x00\x01\x02BAM\n")),
    "mates out of sync": ("SNF-PAIR-001", "samples[0]", _unpaired_reads),
    "CRAM without magic": (
        "SNF-CRAM-001",
        "",
        lambda: sniff_object("s3://b-1/x.cram", b"\x00\x01\x02\x03....").findings,
    ),
    "CRAM 2": ("SNF-CRAM-002", "", lambda: sniff_object("s3://b-1/x.cram", b"CRAM\x02\x01").findings),
    "BAM not compressed": ("SNF-BAM-001", "", lambda: sniff_object("s3://b-1/x.bam", b"BAM\x01").findings),
    "gzip of something else renamed .bam": (
        "SNF-BAM-002",
        "",
        lambda: sniff_object("s3://b-1/x.bam", gz(b"\x00\x01binary")).findings,
    ),
    "unknown format": ("SNF-FMT-001", "", lambda: sniff_object("s3://b-1/x.txt", b"hello").findings),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_broken_input_gives_its_code(case: str) -> None:
    code, field, produce = CORPUS[case]
    findings = produce()
    assert (code, field) in {(f.code, f.field) for f in findings}, findings
    produced = next(f for f in findings if f.code == code)
    assert produced.message and produced.fix and produced.severity == CODES[code].severity


def test_corpus_codes_are_distinct() -> None:
    codes = [code for code, _, _ in CORPUS.values()]
    assert len(set(codes)) == len(codes)


def test_strict_mode_turns_warnings_into_errors() -> None:
    result = import_form(_form(samples=[{**GOOD_SAMPLE, "r2": None}]))
    lenient = validate_spec(result.spec)
    strict = validate_spec(result.spec, strict=True)
    assert lenient.ok and [f.severity for f in lenient.findings] == ["warning"]
    assert not strict.ok and [f.severity for f in strict.findings] == ["error"]


def test_finding_names_the_field() -> None:
    samples = [GOOD_SAMPLE, {**GOOD_SAMPLE, "id": "S2"}, {**GOOD_SAMPLE, "id": "S3", "r1": None}]
    findings = _validated(_form(samples=samples))
    assert [(f.code, f.field) for f in findings] == [("VAL-PAIR-001", "samples[2].r1")]


def test_form_checks_uri_and_pairing_details() -> None:
    sample = {
        **GOOD_SAMPLE,
        "r1": "s3://reads-bucket/S1_R2.fastq.gz",
        "r2": "s3://reads-bucket/S1_R1.fastq.gz",
    }
    findings = _validated(
        _form(
            samples=[
                sample,
                {**GOOD_SAMPLE, "id": "S2", "r2": GOOD_SAMPLE["r1"]},
                {**GOOD_SAMPLE, "id": "S3", "r1": "s3://reads-bucket/"},
            ],
            labels={"Bad Key": "x"},
            notifications={"emails": ["nope"]},
        )
    )
    assert {(f.code, f.field) for f in findings} == {
        ("VAL-PAIR-004", "samples[0].r1"),
        ("VAL-PAIR-003", "samples[1].r2"),
        ("VAL-URI-003", "samples[2].r1"),
        ("VAL-LABEL-001", "labels.Bad Key"),
        ("VAL-NOTIFY-001", "notifications.emails[0]"),
    }
