from __future__ import annotations

from pathlib import Path

import pytest

from stamen.worksets import export_daylily, import_daylily, import_form, validate_spec
from stamen.worksets.daylily_import import derive_unit_id

from .conftest import FIXTURES

MANIFESTS = [
    "analysis_samples_template.tsv",
    "hybrid_ilmn_ont.analysis_samples_manifest.tsv",
    "ilmn_solo.analysis_samples_manifest.tsv",
    "ont_solo.analysis_samples_manifest.tsv",
    "pacbio_solo.analysis_samples_manifest.tsv",
    "ultima_solo.analysis_samples_manifest.tsv",
]


def _import(daylily_dir: Path, manifest: str):  # type: ignore[no-untyped-def]
    return import_daylily(
        (daylily_dir / "daylily_work.yaml").read_bytes(),
        (daylily_dir / "manifests" / manifest).read_bytes(),
        tenant="lsmc",
        default_name="runme14",
    )


def test_every_manifest_in_the_fixture_folder_is_covered(daylily_dir: Path) -> None:
    assert sorted(p.name for p in (daylily_dir / "manifests").glob("*.tsv")) == sorted(MANIFESTS)


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_daylily_fixture_imports(daylily_dir: Path, manifest: str) -> None:
    result = _import(daylily_dir, manifest)
    assert result.ok, result.findings
    assert result.spec is not None
    rows = (daylily_dir / "manifests" / manifest).read_text().strip().split("\n")[1:]
    assert len(result.spec.samples) == len(rows)
    ids = [s.id for s in result.spec.samples]
    assert len(set(ids)) == len(ids)
    assert all(s.r1 or s.alignments for s in result.spec.samples)
    assert result.spec.daylily.dy_r_args == "-p help"
    assert result.spec.daylily.day_clone_args == "-d {workdir_name} -t main"
    assert result.spec.export_uri == (
        "s3://lsmc-dayoa-omics-analysis-us-west-2/daylily_monitoring/active_worksets/runme14/results/"
    )
    assert result.spec.reference_genome == "hg38"  # Daylily's default GRCh38, normalised


def test_repeated_sample_id_gets_distinct_unit_ids(daylily_dir: Path) -> None:
    spec = _import(daylily_dir, "ilmn_solo.analysis_samples_manifest.tsv").spec
    assert spec is not None
    assert [s.id for s in spec.samples] == ["I2_HG003_1x_1", "I2_HG003_3x_2", "I2_HG003_5x_3"]
    assert {s.sample_id for s in spec.samples} == {"HG003"}
    assert derive_unit_id("R 1", "S/2", "", "0") == "R-1_S-2_0"


def test_platforms_and_inputs_from_columns(daylily_dir: Path) -> None:
    hybrid = _import(daylily_dir, "hybrid_ilmn_ont.analysis_samples_manifest.tsv").spec
    assert hybrid is not None
    unit = hybrid.samples[1]
    assert unit.platform == "ILMN" and unit.r1 is not None and unit.r1.endswith("HG003_1x_R1.fastq.gz")
    assert [(a.platform, a.format) for a in unit.alignments] == [("ONT", "cram")]
    assert unit.manifest_fields["STAGE_DIRECTIVE"] == "stage_data"
    pacbio = _import(daylily_dir, "pacbio_solo.analysis_samples_manifest.tsv").spec
    assert pacbio is not None and pacbio.samples[0].platform == "PACBIO"
    assert pacbio.samples[0].alignments[0].format == "bam"
    template = _import(daylily_dir, "analysis_samples_template.tsv").spec
    assert template is not None and template.samples[0].instrument == "NOVASEQX"
    assert template.samples[0].r2 is not None  # from the generic R2_FQ column


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_round_trip_through_daylily_files(daylily_dir: Path, manifest: str) -> None:
    spec = _import(daylily_dir, manifest).spec
    assert spec is not None
    files = export_daylily(spec)
    assert files.findings == []
    again = import_daylily(files.work_yaml, files.stage_samples_tsv, files.info_yaml)
    assert again.findings == []
    assert again.spec == spec


def test_round_trip_of_a_form_spec() -> None:
    spec = import_form((FIXTURES / "form_workset.yaml").read_bytes()).spec
    assert spec is not None
    files = export_daylily(spec)
    assert files.findings == []
    again = import_daylily(files.work_yaml, files.stage_samples_tsv, files.info_yaml)
    assert again.spec == spec
    assert "\tONT_CRAM\t" in files.stage_samples_tsv.split("\n")[0] + "\t"


def test_fixture_validation(daylily_dir: Path) -> None:
    for manifest in MANIFESTS:
        spec = _import(daylily_dir, manifest).spec
        report = validate_spec(spec, strict=True)
        codes = [f.code for f in report.findings]
        if manifest == "analysis_samples_template.tsv":
            # The template's URIs still hold <REF-BUCKET-NAME>.
            assert codes == ["VAL-URI-004", "VAL-URI-004"]
        else:
            assert report.ok, report.findings
        assert report.note is not None and report.dry_run


WORK_WITH_ALIASES = b"""
clone: "-d {workdir_name} -t v1"
run_cmd: "-p produce_snv_concordances"
export: s3://bucket-a/out/
cluster_name: newcluex
budget: my-budget
"""
MANIFEST = (
    b"RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSEQ_VENDOR\tSEQ_PLATFORM\tLANE\tILMN_R1_FQ\tILMN_R2_FQ\n"
    b"R1\tS1\tE1\tILMN\tNOVASEQ\t1\ts3://bucket-a/S1_R1.fastq.gz\ts3://bucket-a/S1_R2.fastq.gz\n"
)


def test_work_key_aliases() -> None:
    result = import_daylily(WORK_WITH_ALIASES, MANIFEST, tenant="lsmc", default_name="ws1")
    assert result.ok, result.findings
    spec = result.spec
    assert spec is not None
    assert spec.daylily.day_clone_args == "-d {workdir_name} -t v1"
    assert spec.daylily.dy_r_args == "-p produce_snv_concordances"
    assert spec.export_uri == "s3://bucket-a/out/"
    assert (spec.preferred_cluster, spec.budget) == ("newcluex", "my-budget")


def test_conflicting_aliases_and_unknown_keys() -> None:
    result = import_daylily(b"dy-r: -p a\nrun: -p b\nfoo: 1\n", MANIFEST, tenant="lsmc", default_name="ws1")
    assert result.spec is None
    codes = {(f.code, f.severity) for f in result.findings}
    assert ("VAL-INPUT-008", "error") in codes
    assert ("VAL-INPUT-007", "warning") in codes


def test_info_yaml_fields_and_tenant_check() -> None:
    info = b"""
workset_id: ws-42
workset_name: my-workset
customer_id: lsmc
created_at: 2025-01-02 03:04:05
pipeline_type: somatic
reference_genome: GRCh37
priority: low
sample_ids: [S1, S9]
notification_email: ops@example.org
enable_qc: true
"""
    result = import_daylily(b"dy-r: -p help\n", MANIFEST, info)
    spec = result.spec
    assert spec is not None
    assert (spec.name, spec.tenant, spec.pipeline, spec.reference_genome, spec.priority) == (
        "my-workset",
        "lsmc",
        "somatic",
        "hg19",
        "low",
    )
    assert spec.daylily.workset_id == "ws-42" and spec.daylily.created_at == "2025-01-02T03:04:05"
    assert spec.notifications.emails == ["ops@example.org"] and spec.daylily.enable_qc is True
    assert [f.code for f in result.findings] == ["VAL-DAY-001"]  # S9 is not in the manifest

    other_tenant = import_daylily(b"dy-r: -p help\n", MANIFEST, info, tenant="someone-else")
    assert other_tenant.spec is None
    assert "VAL-DAY-002" in {f.code for f in other_tenant.findings}


def test_missing_name_and_tenant_are_reported() -> None:
    result = import_daylily(b"dy-r: -p help\n", MANIFEST)
    assert result.spec is None
    assert {(f.code, f.field) for f in result.findings} >= {
        ("VAL-REQ-001", "name"),
        ("VAL-REQ-001", "tenant"),
    }
