"""Broken inputs: each gives its own finding code, and none raises."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stamen.worksets import (
    Finding,
    import_daylily,
    import_form,
    sniff_fastq,
    sniff_object,
    validate_spec,
)
from stamen.worksets.findings import CODES

from .conftest import fastq_records, gz

GOOD_SAMPLE = {"id": "S1", "platform": "ILMN", "r1": "s3://reads-bucket/S1_R1.fastq.gz",
               "r2": "s3://reads-bucket/S1_R2.fastq.gz"}


def _form(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "ws1", "tenant": "lsmc", "samples": [GOOD_SAMPLE],
                               "export_uri": "s3://results-bucket/ws1/"}
    base.update(changes)
    return base


def _validated(document: object) -> list[Finding]:
    result = import_form(document)  # type: ignore[arg-type]
    return validate_spec(result.spec, prior_findings=result.findings).findings


def _truncated_gzip() -> list[Finding]:
    whole = gz(fastq_records(500))
    cut = whole[: len(whole) // 2]
    return sniff_fastq(cut, object_size=len(cut)).findings


def _short_quality() -> list[Finding]:
    text = b"@r1\nACGTACGT\n+\nIIII\n"
    return sniff_fastq(gz(text), object_size=len(gz(text))).findings


MANIFEST_HEADER = b"RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSEQ_VENDOR\tLANE\tILMN_R1_FQ\tILMN_R2_FQ\n"

CORPUS: dict[str, tuple[str, Callable[[], list[Finding]]]] = {
    "truncated gzip": ("SNF-GZ-003", _truncated_gzip),
    "quality shorter than sequence": ("SNF-FQ-003", _short_quality),
    "missing R2": ("VAL-PAIR-002", lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r2": None}]))),
    "R2 without R1": ("VAL-PAIR-001", lambda: _validated(_form(samples=[{**GOOD_SAMPLE, "r1": None}]))),
    "unknown reference": ("VAL-REF-001", lambda: _validated(_form(reference_genome="mm10"))),
    "YAML not a mapping": ("VAL-INPUT-004", lambda: import_form(b"- name: ws1\n- tenant: lsmc\n").findings),
    "invalid YAML": ("VAL-INPUT-003", lambda: import_form(b"name: [unclosed\n").findings),
    "10 MB of garbage": ("VAL-INPUT-002", lambda: import_form(bytes(range(256)) * 40960).findings),
    "non-UTF-8": ("VAL-INPUT-001", lambda: import_form("name: caf\u00e9\n".encode("latin-1")).findings),
    "duplicate sample ids": ("VAL-ID-004", lambda: _validated(_form(samples=[GOOD_SAMPLE, GOOD_SAMPLE]))),
    "bad s3 URI": ("VAL-URI-002", lambda: _validated(_form(export_uri="s3://Bad_Bucket/x/"))),
    "http URI": ("VAL-URI-001", lambda: _validated(_form(export_uri="https://example.org/x/"))),
    "max_retries out of range": ("VAL-RANGE-001", lambda: _validated(_form(max_retries=11))),
    "unknown priority": ("VAL-ENUM-001", lambda: _validated(_form(priority="asap"))),
    "missing tenant": ("VAL-REQ-001", lambda: _validated({"name": "ws1", "samples": [GOOD_SAMPLE]})),
    "YAML alias bomb": ("VAL-INPUT-006", lambda: import_form(b"a: &x [1, 2]\nb: [*x, *x]\n").findings),
    "CSV manifest": ("VAL-TSV-008", lambda: import_daylily(
        b"dy-r: x\n", b"RUN_ID,SAMPLE_ID\nR1,S1\n", tenant="lsmc", default_name="w").findings),
    "empty SAMPLE_ID": ("VAL-TSV-006", lambda: import_daylily(
        b"dy-r: x\n", MANIFEST_HEADER + b"R1\t\tE\tILMN\t1\ts3://b-1/a_R1.fq.gz\ts3://b-1/a_R2.fq.gz\n",
        tenant="lsmc", default_name="w").findings),
    "not gzip despite .gz": ("SNF-GZ-001", lambda: sniff_object(
        "s3://b-1/x_R1.fastq.gz", fastq_records(3)).findings),
    "CRAM without magic": ("SNF-CRAM-001", lambda: sniff_object("s3://b-1/x.cram", b"BAM\x01....").findings),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_broken_input_gives_its_code(case: str) -> None:
    code, produce = CORPUS[case]
    findings = produce()
    assert code in {f.code for f in findings}, findings
    assert code in CODES


def test_corpus_codes_are_distinct() -> None:
    codes = [code for code, _ in CORPUS.values()]
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
    sample = {**GOOD_SAMPLE, "r1": "s3://reads-bucket/S1_R2.fastq.gz", "r2": "s3://reads-bucket/S1_R1.fastq.gz"}
    findings = _validated(_form(samples=[sample, {**GOOD_SAMPLE, "id": "S2", "r2": GOOD_SAMPLE["r1"]},
                                         {**GOOD_SAMPLE, "id": "S3", "r1": "s3://reads-bucket/"}],
                                labels={"Bad Key": "x"}, notifications={"emails": ["nope"]}))
    assert {(f.code, f.field) for f in findings} == {
        ("VAL-PAIR-004", "samples[0].r1"), ("VAL-PAIR-003", "samples[1].r2"), ("VAL-URI-003", "samples[2].r1"),
        ("VAL-LABEL-001", "labels.Bad Key"), ("VAL-NOTIFY-001", "notifications.emails[0]")}
