"""Findings: what intake found wrong with a workset, in a form both machines and people can act on.

Every code stamen can emit is listed in `CODES` with its default severity, summary and fix, so the
catalogue, the docs (docs/validation.md) and the emitting code cannot drift apart silently: a test
checks that every code used in the package is catalogued and documented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class CodeInfo:
    severity: Severity
    summary: str
    fix: str


CODES: dict[str, CodeInfo] = {
    # --- reading the document ---
    "VAL-INPUT-001": CodeInfo(
        "error",
        "Input is not valid UTF-8 text.",
        "Save the file as UTF-8; make sure it is the YAML/TSV file and not a compressed or binary file.",
    ),
    "VAL-INPUT-002": CodeInfo(
        "error",
        "Input is larger than the size limit for this kind of file.",
        "Upload the workset configuration or manifest, not data; split very large "
        "manifests into several worksets.",
    ),
    "VAL-INPUT-003": CodeInfo(
        "error",
        "Input is not valid YAML.",
        "Fix the YAML syntax at the reported line (indentation, unclosed quotes, tabs used for indentation).",
    ),
    "VAL-INPUT-004": CodeInfo(
        "error",
        "The document's top level is not a mapping of keys to values.",
        "Write the file as `key: value` lines at the top level, not a list or a single value.",
    ),
    "VAL-INPUT-005": CodeInfo(
        "error",
        "The document is empty.",
        "Provide the file's content; an empty upload cannot describe a workset.",
    ),
    "VAL-INPUT-006": CodeInfo(
        "error",
        "YAML anchors and aliases (&name / *name) are not accepted.",
        "Write the values out in full; aliases can expand without bound.",
    ),
    "VAL-INPUT-007": CodeInfo(
        "error",
        "Unknown field (a warning in Daylily files, which Daylily ignores).",
        "Check the field name's spelling against docs/validation.md or remove it.",
    ),
    "VAL-INPUT-008": CodeInfo(
        "error",
        "The same setting is given twice with different values (for example `dy-r` and its alias `run`).",
        "Keep one spelling of the setting and delete the other.",
    ),
    "VAL-INPUT-009": CodeInfo(
        "error",
        "A key appears twice in the same mapping (YAML) or object (JSON).",
        "Keep one of the two and delete the other: readers silently keep only the last, so the value you see "
        "first is not the one that would be used.",
    ),
    # --- structure (from the model) ---
    "VAL-REQ-001": CodeInfo("error", "A required field is missing.", "Add the field."),
    "VAL-REQ-002": CodeInfo(
        "error", "The workset has no samples.", "Add at least one sample (one manifest row per sample unit)."
    ),
    "VAL-REQ-003": CodeInfo(
        "warning",
        "No export_uri: results will stay on the cluster.",
        "Set export_uri to an s3:// prefix where results should be copied.",
    ),
    "VAL-TYPE-001": CodeInfo(
        "error",
        "A field has the wrong type.",
        "Give a value of the type named in the message (text, number, list, mapping).",
    ),
    "VAL-TYPE-002": CodeInfo(
        "error",
        "A number is not finite (inf, NaN, or too large to represent, such as 1e999).",
        "Give an ordinary number; leave the field out to use its default or to have no limit.",
    ),
    "VAL-RANGE-001": CodeInfo(
        "error",
        "A number is out of its allowed range.",
        "Use a value inside the range named in the message (max_retries: 0-10).",
    ),
    "VAL-RANGE-002": CodeInfo(
        "error",
        "The workset has more sample units than one workset may hold (10,000).",
        "Split it into several worksets of at most 10,000 sample units (manifest rows) each.",
    ),
    "VAL-ENUM-001": CodeInfo(
        "error", "A value is not one of the allowed choices.", "Use one of the values listed in the message."
    ),
    # --- manifest TSV ---
    "VAL-TSV-001": CodeInfo(
        "error",
        "The manifest lacks a column every sample needs (the message names them all).",
        "Start from Daylily's analysis_samples_template.tsv header: SAMPLE_ID, SEQ_VENDOR (or SEQ_PLATFORM) and "
        "the input columns of your platform (e.g. ILMN_R1_FQ and ILMN_R2_FQ) are required.",
    ),
    "VAL-TSV-002": CodeInfo(
        "error",
        "A manifest row has more fields than the header.",
        "Remove stray tab characters from the row or add the missing header column.",
    ),
    "VAL-TSV-003": CodeInfo(
        "error", "The manifest has a header but no sample rows.", "Add one row per sample unit."
    ),
    "VAL-TSV-004": CodeInfo(
        "error", "The manifest header names a column twice.", "Delete the duplicate column."
    ),
    "VAL-TSV-005": CodeInfo(
        "error",
        "The sequencing platform of a row cannot be determined.",
        "Set SEQ_VENDOR to one of ILMN, ONT, PACBIO, UG, ROCHE, CG (or a known SEQ_PLATFORM instrument).",
    ),
    "VAL-TSV-006": CodeInfo("error", "A manifest row has an empty SAMPLE_ID.", "Fill in SAMPLE_ID."),
    "VAL-TSV-007": CodeInfo(
        "error",
        "A row gives the same read in two FASTQ columns with different URIs (e.g. R1_FQ and ILMN_R1_FQ).",
        "Keep the platform-specific column (ILMN_R1_FQ ...) and clear the generic one.",
    ),
    "VAL-TSV-008": CodeInfo(
        "error",
        "The manifest is not tab-separated (it looks comma-separated).",
        "Export the sheet as TSV (tab-separated), not CSV.",
    ),
    # --- Daylily files ---
    "VAL-DAY-001": CodeInfo(
        "warning",
        "daylily_info.yaml lists a sample id that is not in the manifest.",
        "Make sample_ids in daylily_info.yaml match the manifest's SAMPLE_ID values.",
    ),
    "VAL-DAY-002": CodeInfo(
        "error",
        "customer_id in daylily_info.yaml does not match the tenant the workset was submitted under.",
        "Submit the workset under its own tenant or correct customer_id.",
    ),
    "VAL-DAY-003": CodeInfo(
        "warning",
        "stamen.unit_ids in daylily_info.yaml does not match the manifest "
        "rows; unit ids were derived from the manifest instead.",
        "Regenerate daylily_info.yaml with `stamen generate-yaml` or remove the stamen section.",
    ),
    "VAL-DAY-004": CodeInfo(
        "error",
        "The Daylily workset folder lacks a required file (daylily_work.yaml, "
        "or stage_samples.tsv / *analysis_samples_manifest.tsv).",
        "Upload the missing file into the workset folder before writing daylily.ready.",
    ),
    "VAL-DAY-005": CodeInfo(
        "error",
        "The Daylily workset folder holds more than one sample manifest and none is named stage_samples.tsv.",
        "Keep one manifest in the folder, or name the one to use stage_samples.tsv.",
    ),
    # --- identifiers ---
    "VAL-ID-001": CodeInfo(
        "error",
        "The workset name has characters or a length that is not allowed.",
        "Use 1-128 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
    ),
    "VAL-ID-002": CodeInfo(
        "error",
        "The tenant id has characters or a length that is not allowed.",
        "Use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
    ),
    "VAL-ID-003": CodeInfo(
        "error",
        "A sample id has characters or a length that is not allowed.",
        "Use 1-128 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
    ),
    "VAL-ID-004": CodeInfo(
        "error",
        "Two samples have the same id.",
        "Give every sample unit its own id (Daylily rows differ by RUN_ID, EXPERIMENTID or LANE).",
    ),
    "VAL-ID-005": CodeInfo(
        "error",
        "An identifier holds '..' or a path separator, so as a file or folder name it could lead outside its "
        "folder.",
        "Use letters, digits, '.', '_' or '-' without '..' (sample ids, SAMPLE_ID, RUN_ID, EXPERIMENTID, "
        "LANE, the workset name, workdir_name).",
    ),
    "VAL-REF-001": CodeInfo(
        "error",
        "The reference genome is not in the registry.",
        "Use hg38 (GRCh38), hg19 (GRCh37) or b37, or one of their aliases.",
    ),
    "VAL-REF-002": CodeInfo(
        "error",
        "Reference genome files are missing under the configured reference location.",
        "Upload the listed index files next to the FASTA (samtools faidx, bwa index, "
        "picard CreateSequenceDictionary) or fix STAMEN_REFERENCE_LOCATION.",
    ),
    # --- inputs ---
    "VAL-PAIR-001": CodeInfo(
        "error", "R2 is given without R1.", "Add the R1 FASTQ, or move a single-end file to r1."
    ),
    "VAL-PAIR-002": CodeInfo(
        "warning",
        "Only R1 is given for a paired-end platform.",
        "Add the R2 FASTQ; if the run really is single-end, ignore this warning "
        "(strict mode treats it as an error).",
    ),
    "VAL-PAIR-003": CodeInfo("error", "R1 and R2 point at the same object.", "Point r2 at the mate file."),
    "VAL-PAIR-004": CodeInfo(
        "warning",
        "R1 and R2 file names do not look like mates (or look swapped).",
        "Check that r1/r2 belong to the same library and are not swapped.",
    ),
    "VAL-SAMPLE-001": CodeInfo(
        "error",
        "A sample has no input files.",
        "Give r1 (and r2) FASTQs or an aligned CRAM/BAM for the sample.",
    ),
    "VAL-SAMPLE-002": CodeInfo(
        "warning",
        "An input's file extension does not match its format.",
        "FASTQs end in .fastq/.fq (optionally .gz), CRAMs in .cram, BAMs in .bam.",
    ),
    "VAL-URI-001": CodeInfo("error", "Not an s3:// URI.", "Write the location as s3://bucket/key."),
    "VAL-URI-002": CodeInfo(
        "error",
        "The S3 bucket name is invalid.",
        "Bucket names are 3-63 lowercase letters, digits, '.' and '-', starting and "
        "ending with a letter or digit.",
    ),
    "VAL-URI-003": CodeInfo(
        "error",
        "The URI names a bucket or prefix, not an object.",
        "Give the full object key, e.g. s3://bucket/path/sample_R1.fastq.gz.",
    ),
    "VAL-URI-004": CodeInfo(
        "error",
        "The URI still contains a template placeholder such as <BUCKET>.",
        "Replace the placeholder with the real bucket or path.",
    ),
    "VAL-URI-005": CodeInfo(
        "error",
        "The URI contains whitespace.",
        "Remove spaces, tabs or newlines from the URI (rename the object if needed).",
    ),
    "VAL-URI-006": CodeInfo(
        "error",
        "The S3 key has a '.' or '..' path segment.",
        "Write the key without '.' and '..' segments (S3 keeps them literally; staged to disk they would "
        "point elsewhere).",
    ),
    "VAL-LABEL-001": CodeInfo(
        "error",
        "A label key is invalid or a label is not key=value.",
        "Keys are 1-63 lowercase letters, digits, '.', '_', '/', '-', starting and "
        "ending with a letter or digit; write labels as key=value.",
    ),
    "VAL-LABEL-002": CodeInfo(
        "error",
        "A label value is too long or spans lines.",
        "Keep label values to one line of at most 256 characters.",
    ),
    "VAL-NOTIFY-001": CodeInfo(
        "error", "A notification e-mail address is invalid.", "Use an address of the form name@example.org."
    ),
    "VAL-NOTIFY-002": CodeInfo(
        "error", "The notification webhook is not an https:// URL.", "Use an https:// URL for the webhook."
    ),
    "VAL-PIPE-001": CodeInfo(
        "warning",
        "The fastq-qc pipeline was chosen for a sample with no FASTQ input.",
        "Give FASTQs for the sample or choose a pipeline that accepts CRAM/BAM.",
    ),
    "VAL-COST-001": CodeInfo(
        "warning",
        "The median cost estimate exceeds the workset's max_cost_usd.",
        "Raise max_cost_usd, or reduce the samples or coverage.",
    ),
    "VAL-EXPORT-001": CodeInfo(
        "error",
        "An input cannot be written to a Daylily manifest column.",
        "Daylily has no column for this platform/format combination; convert the "
        "input (e.g. to FASTQ) or run the workset with a non-Daylily engine.",
    ),
    "VAL-EXPORT-002": CodeInfo(
        "warning",
        "A value contains a tab or line break, which a TSV cell cannot hold; it was replaced by a space.",
        "Remove tabs and line breaks from manifest values.",
    ),
    # --- input objects in storage ---
    "SNF-OBJ-001": CodeInfo(
        "error",
        "The input object does not exist.",
        "Check the key's spelling and that the upload finished; list the prefix with `aws s3 ls`.",
    ),
    "SNF-OBJ-002": CodeInfo(
        "error",
        "The input object is empty (0 bytes).",
        "Upload the file again; an empty object is usually an interrupted transfer.",
    ),
    "SNF-OBJ-003": CodeInfo(
        "error",
        "The input object cannot be read by stamen (access denied).",
        "Grant stamen's role s3:GetObject on the object (and kms:Decrypt for SSE-KMS "
        "keys), or copy the data into a bucket stamen can read.",
    ),
    "SNF-OBJ-004": CodeInfo(
        "error",
        "The input's bucket does not exist.",
        "Check the bucket name; buckets are global, a typo names someone else's or none.",
    ),
    "SNF-OBJ-005": CodeInfo(
        "error",
        "The input object is in an archive storage class (Glacier) and cannot be read until restored.",
        "Restore the object (aws s3api restore-object) or copy it to STANDARD first.",
    ),
    "SNF-OBJ-006": CodeInfo(
        "error",
        "Storage could not be reached, so this input was not checked.",
        "Nothing to fix in the workset: retry later. The validator service retries "
        "on its own instead of rejecting the workset.",
    ),
    # --- content sniffing ---
    "SNF-GZ-001": CodeInfo(
        "error",
        "The object's name says gzip but it does not start with gzip magic.",
        "Recompress the file with gzip/bgzip or rename it without .gz.",
    ),
    "SNF-GZ-002": CodeInfo(
        "error",
        "The gzip data is corrupt.",
        "Re-upload the file; check the transfer (compare checksums with the source).",
    ),
    "SNF-GZ-003": CodeInfo(
        "error",
        "The gzip stream is truncated: the object ends mid-stream.",
        "The upload was cut short; upload the complete file.",
    ),
    "SNF-GZ-005": CodeInfo(
        "warning",
        "The BGZF file's blocks are complete but its end-of-file marker is missing: it may have been cut at a "
        "block boundary.",
        "Compare the object's size with the source file; re-upload it if they differ (htslib warns the same).",
    ),
    "SNF-GZ-006": CodeInfo(
        "warning",
        "The end of this plain-gzip object could not be verified (its trailer does not vouch for it and it is "
        "larger than STAMEN_GZIP_VERIFY_MAX_BYTES).",
        "Recompress with bgzip (BGZF ends with a marker stamen checks), or compare the object's checksum with the "
        "source file.",
    ),
    "SNF-GZ-004": CodeInfo(
        "warning",
        "The sampled bytes were too few to decompress anything.",
        "Nothing to fix in the file; sample a larger byte range.",
    ),
    "SNF-FQ-001": CodeInfo(
        "error",
        "A FASTQ record header line does not start with '@'.",
        "Check the file is FASTQ (not FASTA, BAM or text) and not corrupted.",
    ),
    "SNF-FQ-002": CodeInfo(
        "error",
        "A FASTQ separator line does not start with '+'.",
        "Check the file is 4-line FASTQ (no wrapped sequence lines).",
    ),
    "SNF-FQ-003": CodeInfo(
        "error",
        "A FASTQ record's quality string differs in length from its sequence.",
        "The file is corrupt or was edited; regenerate it from the sequencer output.",
    ),
    "SNF-FQ-004": CodeInfo(
        "error",
        "A quality character is outside the Phred+33 range ('!' to '~').",
        "Convert qualities to Phred+33 (Sanger / Illumina 1.8+).",
    ),
    "SNF-FQ-005": CodeInfo(
        "error",
        "A sequence line has characters that are not IUPAC nucleotides.",
        "Check the file is nucleotide FASTQ and not corrupted.",
    ),
    "SNF-FQ-006": CodeInfo(
        "error",
        "No complete FASTQ record in the sampled bytes (a warning when the "
        "sample simply ended inside one long read).",
        "Check the object is non-empty FASTQ; for long reads sample more bytes.",
    ),
    "SNF-FQ-007": CodeInfo(
        "error",
        "The decompressed content is binary, not FASTQ text.",
        "Check the object is FASTQ and not BAM, CRAM, zip or another format.",
    ),
    "SNF-FQ-008": CodeInfo(
        "warning",
        "The FASTQ has Windows (CRLF) line endings.",
        "stamen's fastq-qc and bwa-mem2 read them; for other tools convert first: `sed -i 's/\\r$//' reads.fastq` "
        "(or `dos2unix`), then gzip again.",
    ),
    "SNF-FQ-009": CodeInfo(
        "error",
        "The qualities are Phred+64 (Illumina 1.3-1.7 / Solexa), not Phred+33: every base would read as far "
        "better than it is.",
        "Convert to Phred+33: `seqtk seq -Q64 -V in.fastq.gz | gzip > out.fastq.gz` (or `reformat.sh "
        "qin=64 qout=33`), then upload the converted file.",
    ),
    "SNF-PAIR-001": CodeInfo(
        "error",
        "The first read names of R1 and R2 do not pair up.",
        "R1 and R2 come from different runs or are out of sync; use mates from the same run.",
    ),
    "SNF-CRAM-001": CodeInfo(
        "error",
        "The object does not start with the CRAM magic bytes.",
        "Check the object is a CRAM file (not BAM or FASTQ renamed to .cram).",
    ),
    "SNF-CRAM-002": CodeInfo(
        "warning", "The CRAM major version is older than 3.", "Convert to CRAM 3 with `samtools view -C`."
    ),
    "SNF-BAM-001": CodeInfo(
        "error",
        "The object is not BGZF/gzip compressed, so it cannot be a BAM.",
        "Check the object is a BAM file (not SAM or CRAM renamed to .bam).",
    ),
    "SNF-BAM-002": CodeInfo(
        "error",
        "The decompressed object does not start with BAM\\1.",
        "Check the object is a BAM file and not another gzip file renamed to .bam.",
    ),
    "SNF-FMT-002": CodeInfo(
        "error",
        "The object's content is another format than its name says (e.g. BAM or FASTA named .fastq.gz).",
        "Give the input in the column or field of its real format (BAM/CRAM as alignments), or convert it "
        "(`samtools fastq` for BAM/CRAM to FASTQ); FASTA has no qualities and cannot stand in for FASTQ.",
    ),
    "SNF-FMT-001": CodeInfo(
        "warning",
        "The input's format cannot be told from its name; it was not sniffed.",
        "Name inputs .fastq.gz/.fq.gz, .cram or .bam.",
    ),
    # --- the tenant's buckets (stamen.tenancy: every intake path and the scheduler) ---
    "S3-ACCESS-001": CodeInfo(
        "error",
        "The workset reads from a bucket its tenant may not use (not its own bucket, not granted to it).",
        "Put the data in the tenant's own bucket, or have an operator grant the bucket to the tenant "
        "(`stamen bucket grant <tenant> <bucket> --read-only`).",
    ),
    "S3-ACCESS-002": CodeInfo(
        "error",
        "The workset writes to a bucket its tenant may not write to (not its own, not granted, or "
        "granted read-only).",
        "Point the field at the tenant's own bucket, or have an operator grant the bucket read-write "
        "(`stamen bucket grant <tenant> <bucket> --read-write`).",
    ),
    "S3-ACCESS-003": CodeInfo(
        "error",
        "A dropped workset folder is in a bucket its tenant may not use.",
        "Drop the folder into the tenant's own bucket, map the drop bucket to the right tenant "
        "(STAMEN_DROP_BUCKETS bucket=tenant), or have an operator grant it "
        "(`stamen bucket grant <tenant> <bucket> --read-write`).",
    ),
    # --- the submitting tenant (checked by the validator service, whatever the intake path) ---
    "QUOTA-STORAGE-001": CodeInfo(
        "error",
        "The tenant's bucket already holds more than its storage quota (max_storage_gb).",
        "Free space in the tenant's bucket (delete or archive results no longer "
        "needed) or have an operator raise the customer's max_storage_gb, then "
        "submit the workset again.",
    ),
}


class Finding(BaseModel):
    """One problem found in a workset. `code` is stable and machine-readable; `field` is a path into
    the spec such as `samples[2].r2` (empty for whole-document problems)."""

    model_config = ConfigDict(frozen=True)

    code: str
    field: str = ""
    message: str
    fix: str
    severity: Severity
    source: str | None = Field(default=None, description="File the finding refers to, when known.")


def finding(
    code: str,
    field: str,
    message: str | None = None,
    *,
    severity: Severity | None = None,
    source: str | None = None,
    fix: str | None = None,
) -> Finding:
    """Build a finding from the catalogue; message/severity/fix default to the catalogued ones."""
    info = CODES[code]
    return Finding(
        code=code,
        field=field,
        message=message or info.summary,
        fix=fix or info.fix,
        severity=severity or info.severity,
        source=source,
    )


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def escalate(findings: Iterable[Finding]) -> list[Finding]:
    """Strict mode: every warning becomes an error."""
    return [f if f.severity == "error" else f.model_copy(update={"severity": "error"}) for f in findings]


def field_path(loc: Iterable[int | str]) -> str:
    """('samples', 2, 'r2') -> 'samples[2].r2'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path
