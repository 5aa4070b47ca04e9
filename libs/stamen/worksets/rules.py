"""Validation rules over a `WorksetSpec`: pure functions, each returning findings.

Structural problems (missing fields, wrong types, out-of-range numbers, unknown choices) are caught
when the spec is built and turned into findings by `findings_from_validation_error`; the rules here
need the whole spec or the data registries, and all run so a user sees every problem at once.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, computed_field

from stamen.domain.workset import TENANT_ID_PATTERN
from stamen.worksets.cost import CostEstimate
from stamen.worksets.findings import Finding, escalate, finding, has_errors
from stamen.worksets.limits import MAX_SAMPLES
from stamen.worksets.registry import daylily_format, references
from stamen.worksets.spec import WorksetSpec, input_files

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BUCKET_NAME_REGEX = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"  # also the CHECK of bucket_grants.bucket
_BUCKET_PATTERN = re.compile(BUCKET_NAME_REGEX)
_PLACEHOLDER_PATTERN = re.compile(r"<[^>]*>|\{[^}]*\}")
_LABEL_KEY_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# The read-number token in a FASTQ file name: _R1_, .R2., _1. ... (the last one wins).
_MATE_TOKEN = re.compile(r"(?<=[._-])(R?)([12])(?=[._-])")
_FASTQ_SUFFIXES = (".fastq", ".fq", ".fastq.gz", ".fq.gz", ".fastq.bz2", ".fq.bz2", ".fastq.zst", ".fq.zst")
MAX_LABEL_VALUE = 256

STORAGE_SKIPPED_NOTE = (
    "Storage checks were skipped (object existence, sizes, reference index files and "
    "content sniffing of the inputs): this report covers the submitted documents only."
)

Rule = Callable[[WorksetSpec], list[Finding]]


def check_identifiers(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    if not _NAME_PATTERN.fullmatch(spec.name):
        results.append(finding("VAL-ID-001", "name", f"workset name {spec.name!r} is not allowed"))
    if not TENANT_ID_PATTERN.fullmatch(spec.tenant):
        results.append(finding("VAL-ID-002", "tenant", f"tenant {spec.tenant!r} is not allowed"))
    for i, sample in enumerate(spec.samples):
        if not _NAME_PATTERN.fullmatch(sample.id):
            results.append(
                finding("VAL-ID-003", f"samples[{i}].id", f"sample id {sample.id!r} is not allowed")
            )
    return results


def traverses(value: str) -> bool:
    """Could this identifier, used as a file or folder name, lead outside its folder?"""
    return ".." in value or "/" in value or "\\" in value


def check_no_path_traversal(spec: WorksetSpec) -> list[Finding]:
    """Identifiers end up in paths (work folders, staged file names, Daylily's day-clone -d): none may hold
    '..' or a path separator."""
    named: list[tuple[str, str | None]] = [
        ("name", spec.name),
        ("daylily.workdir_name", spec.daylily.workdir_name),
        ("daylily.workset_id", spec.daylily.workset_id),
    ]
    for i, sample in enumerate(spec.samples):
        named += [
            (f"samples[{i}].{key}", getattr(sample, key))
            for key in ("id", "sample_id", "run_id", "experiment_id", "lane")
        ]
    return [
        finding("VAL-ID-005", path, f"{value!r} holds '..' or a path separator")
        for path, value in named
        if value is not None and traverses(value)
    ]


def check_samples_present(spec: WorksetSpec) -> list[Finding]:
    if len(spec.samples) > MAX_SAMPLES:
        return [
            finding(
                "VAL-RANGE-002",
                "samples",
                f"{len(spec.samples)} sample units; a workset holds at most {MAX_SAMPLES}",
            )
        ]
    return [] if spec.samples else [finding("VAL-REQ-002", "samples")]


def check_unique_sample_ids(spec: WorksetSpec) -> list[Finding]:
    first_seen: dict[str, int] = {}
    results: list[Finding] = []
    for i, sample in enumerate(spec.samples):
        if sample.id in first_seen:
            results.append(
                finding(
                    "VAL-ID-004",
                    f"samples[{i}].id",
                    f"sample id {sample.id!r} is also used by samples[{first_seen[sample.id]}]",
                )
            )
        else:
            first_seen[sample.id] = i
    return results


def check_reference(spec: WorksetSpec) -> list[Finding]:
    registry = references()
    if spec.reference_genome in registry.genomes:
        return []
    known = ", ".join(f"{key} ({'/'.join(g.aliases[:2])})" for key, g in registry.genomes.items())
    return [
        finding(
            "VAL-REF-001",
            "reference_genome",
            f"reference genome {spec.reference_genome!r} is unknown; known: {known}",
        )
    ]


def _mate_key(uri: str) -> tuple[str, str] | None:
    """(file name with the read-number token blanked, read number), or None when there is no token."""
    name = posixpath.basename(uri)
    matches = list(_MATE_TOKEN.finditer(name))
    if not matches:
        return None
    last = matches[-1]
    return name[: last.start()] + last.group(1) + "#" + name[last.end() :], last.group(2)


def _pair_findings(r1: str | None, r2: str | None, platform: str, path: str) -> list[Finding]:
    if r2 and not r1:
        return [finding("VAL-PAIR-001", f"{path}.r1", f"{path}.r2 is set but {path}.r1 is missing")]
    if r1 and not r2:
        if daylily_format().platforms[platform].paired:
            return [
                finding("VAL-PAIR-002", f"{path}.r2", f"{platform} is paired-end but {path}.r2 is missing")
            ]
        return []
    if not (r1 and r2):
        return []
    if r1 == r2:
        return [finding("VAL-PAIR-003", f"{path}.r2", f"r1 and r2 are both {r1}")]
    key1, key2 = _mate_key(r1), _mate_key(r2)
    if key1 is None or key2 is None:
        return []
    if key1[1] == "2" and key2[1] == "1":
        return [finding("VAL-PAIR-004", f"{path}.r1", "r1 looks like an R2 file and r2 like an R1 file")]
    if key1[0] != key2[0]:
        return [
            finding(
                "VAL-PAIR-004",
                f"{path}.r2",
                f"{posixpath.basename(r2)} does not look like the mate of {posixpath.basename(r1)}",
            )
        ]
    return []


def check_read_pairing(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    for i, sample in enumerate(spec.samples):
        results.extend(_pair_findings(sample.r1, sample.r2, sample.platform, f"samples[{i}]"))
        for j, pair in enumerate(sample.extra_fastq):
            results.extend(_pair_findings(pair.r1, pair.r2, pair.platform, f"samples[{i}].extra_fastq[{j}]"))
    return results


def check_inputs_present(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    for i, sample in enumerate(spec.samples):
        has_fastq = bool(sample.r1 or sample.r2 or any(p.r1 or p.r2 for p in sample.extra_fastq))
        if not has_fastq and not sample.alignments:
            results.append(
                finding("VAL-SAMPLE-001", f"samples[{i}]", f"sample {sample.id!r} has no input files")
            )
        elif spec.pipeline == "fastq-qc" and not has_fastq:
            results.append(
                finding(
                    "VAL-PIPE-001",
                    f"samples[{i}]",
                    f"sample {sample.id!r} has only CRAM/BAM input; fastq-qc needs FASTQ",
                )
            )
    return results


def check_s3_uri(uri: str, path: str, *, needs_key: bool) -> list[Finding]:
    """Format of one s3:// URI; `needs_key` for objects (inputs) as opposed to prefixes (export_uri)."""
    if _PLACEHOLDER_PATTERN.search(uri):
        return [finding("VAL-URI-004", path, f"{uri} contains a template placeholder")]
    if re.search(r"\s", uri):
        return [finding("VAL-URI-005", path, f"{uri!r} contains whitespace")]
    if not uri.startswith("s3://"):
        return [finding("VAL-URI-001", path, f"{uri} is not an s3:// URI")]
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not valid_bucket_name(bucket):
        return [finding("VAL-URI-002", path, f"bucket {bucket!r} in {uri} is not a valid S3 bucket name")]
    if needs_key and (not key or key.endswith("/")):
        return [finding("VAL-URI-003", path, f"{uri} names a bucket or prefix, not an object")]
    if any(segment in (".", "..") for segment in key.split("/")):
        return [finding("VAL-URI-006", path, f"{uri} has a '.' or '..' path segment")]
    return []


def valid_bucket_name(bucket: str) -> bool:
    """S3's bucket naming rule (lower case, 3-63 characters, no "..", not an IP address)."""
    return bool(_BUCKET_PATTERN.fullmatch(bucket)) and ".." not in bucket and not _is_ip_address(bucket)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_uris(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    for path, uri, fmt in input_files(spec):
        problems = check_s3_uri(uri, path, needs_key=True)
        results.extend(problems)
        if not problems and not _has_format_suffix(uri, fmt):
            results.append(
                finding(
                    "VAL-SAMPLE-002",
                    path,
                    f"{posixpath.basename(uri)} does not look like a {fmt.upper()} file name",
                )
            )
    if spec.export_uri is None:
        results.append(finding("VAL-REQ-003", "export_uri"))
    else:
        results.extend(check_s3_uri(spec.export_uri, "export_uri", needs_key=False))
    return results


def _has_format_suffix(uri: str, fmt: str) -> bool:
    name = uri.lower()
    return name.endswith(_FASTQ_SUFFIXES) if fmt == "fastq" else name.endswith("." + fmt)


def check_labels(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    for key, value in spec.labels.items():
        if not _LABEL_KEY_PATTERN.fullmatch(key):
            results.append(finding("VAL-LABEL-001", f"labels.{key}", f"label key {key!r} is not allowed"))
        if len(value) > MAX_LABEL_VALUE or "\n" in value or "\r" in value:
            results.append(
                finding(
                    "VAL-LABEL-002",
                    f"labels.{key}",
                    f"label {key!r} has a value that is too long or spans lines",
                )
            )
    return results


def check_notifications(spec: WorksetSpec) -> list[Finding]:
    results: list[Finding] = []
    for i, email in enumerate(spec.notifications.emails):
        if not _EMAIL_PATTERN.fullmatch(email):
            results.append(
                finding("VAL-NOTIFY-001", f"notifications.emails[{i}]", f"{email!r} is not an e-mail address")
            )
    webhook = spec.notifications.webhook_url
    if webhook is not None and not re.fullmatch(r"https://[^\s/]+(/\S*)?", webhook):
        results.append(finding("VAL-NOTIFY-002", "notifications.webhook_url", f"{webhook!r} is not https://"))
    return results


RULES: tuple[Rule, ...] = (
    check_samples_present,
    check_identifiers,
    check_no_path_traversal,
    check_unique_sample_ids,
    check_reference,
    check_inputs_present,
    check_read_pairing,
    check_uris,
    check_labels,
    check_notifications,
)


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    findings: list[Finding]
    strict: bool
    dry_run: bool
    note: str | None = None
    estimate: CostEstimate | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not has_errors(self.findings)


def validate_spec(
    spec: WorksetSpec | None,
    *,
    strict: bool = False,
    dry_run: bool = True,
    prior_findings: Iterable[Finding] = (),
    storage_findings: Sequence[Finding] | None = None,
    estimate: CostEstimate | None = None,
) -> ValidationReport:
    """Run every rule over `spec` and assemble the report.

    `prior_findings` are the importer's; `storage_findings` come from the (impure) storage checks, and
    `None` means they were not run, which the report says in `note`. `spec` may be None when the import
    failed, so a caller can report import findings through the same shape."""
    findings = list(prior_findings)
    if spec is not None:
        for rule in RULES:
            findings.extend(rule(spec))
        if (
            estimate is not None
            and spec.max_cost_usd is not None
            and estimate.cost_usd_median > spec.max_cost_usd
        ):
            findings.append(
                finding(
                    "VAL-COST-001",
                    "max_cost_usd",
                    f"median estimate "
                    f"${estimate.cost_usd_median:.2f} exceeds max_cost_usd "
                    f"${spec.max_cost_usd:.2f}",
                )
            )
    findings.extend(storage_findings or ())
    return ValidationReport(
        findings=escalate(findings) if strict else findings,
        strict=strict,
        dry_run=dry_run,
        note=STORAGE_SKIPPED_NOTE if storage_findings is None else None,
        estimate=estimate,
    )
