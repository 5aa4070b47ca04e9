"""Whatever bytes or text arrive, importers and sniffers return findings, never raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stamen.worksets import import_daylily, import_form, sniff_fastq, sniff_object, validate_spec

from .conftest import fastq_records, gz

payloads = st.one_of(st.binary(max_size=2048), st.text(max_size=2048))
yaml_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "name",
    "tenant",
    "pipeline",
    "reference_genome",
    "priority",
    "max_retries",
    "samples",
    "labels",
    "export_uri",
    "notifications",
    "daylily",
    "max_cost_usd",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_form_importer_never_raises(data: bytes | str) -> None:
    result = import_form(data)
    validate_spec(result.spec, prior_findings=result.findings)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS), yaml_like, max_size=8))
def test_form_mapping_never_raises(document: dict[str, object]) -> None:
    result = import_form(document)
    assert result.spec is not None or result.findings
    validate_spec(result.spec, prior_findings=result.findings, strict=True)


@settings(max_examples=300)
@given(payloads, payloads, st.one_of(st.none(), payloads))
def test_daylily_importer_never_raises(
    work: bytes | str, manifest: bytes | str, info: bytes | str | None
) -> None:
    result = import_daylily(work, manifest, info, tenant="lsmc", default_name="ws")
    assert result.spec is not None or result.findings


@settings(max_examples=200)
@given(st.text(alphabet="\t\nRUN_IDSAMPLEXPTVNOLs3:/abc.gzfq-", max_size=600))
def test_manifest_shaped_text_never_raises(manifest: str) -> None:
    header = "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSEQ_VENDOR\tILMN_R1_FQ\tILMN_R2_FQ\tONT_CRAM\n"
    result = import_daylily("dy-r: x\n", header + manifest, tenant="lsmc", default_name="ws")
    validate_spec(result.spec, prior_findings=result.findings)


@settings(max_examples=300)
@given(st.binary(max_size=4096), st.one_of(st.none(), st.integers(min_value=0, max_value=8192)))
def test_sniffers_never_raise(data: bytes, size: int | None) -> None:
    sniff_fastq(data, object_size=size)
    for name in ("x.fastq.gz", "x.fq", "x.cram", "x.bam", "x.txt"):
        sniff_object(f"s3://b-1/{name}", data, object_size=size)


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=1, max_value=50),
)
def test_damaged_gzip_never_raises(position: int, value: int, cut: int) -> None:
    data = bytearray(gz(fastq_records(50)))
    data[position % len(data)] = value
    sniff_fastq(bytes(data[: len(data) - cut]), object_size=len(data) - cut)
