"""fastq-qc step 3: qc.json (machine-readable) and qc.html (one self-contained page) from the metrics.

    python -m stamen.pipelines.fastq_qc.report --metrics qc/metrics.json --workset-id W --out-dir report

qc.json keeps the raw counts next to the derived values, so anyone can recompute them:
per file and per sample, read_count, total_bases, gc_bases, acgt_bases, quality_sum, gc_percent
(100 * gc_bases / acgt_bases) and mean_quality (quality_sum / total_bases, Phred). A sample's values
add up its R1 and R2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

COUNT_FIELDS = ("read_count", "total_bases", "gc_bases", "acgt_bases", "quality_sum")
REPORT_JSON = "qc.json"
REPORT_HTML = "qc.html"


def _derived(counts: dict[str, Any]) -> dict[str, Any]:
    gc = 100.0 * counts["gc_bases"] / counts["acgt_bases"] if counts["acgt_bases"] else None
    quality = counts["quality_sum"] / counts["total_bases"] if counts["total_bases"] else None
    return {**counts, "gc_percent": gc, "mean_quality": quality}


def _warnings(sample: dict[str, Any]) -> list[str]:
    found = []
    counts = {f["read"]: f["read_count"] for f in sample["files"]}
    if "R1" in counts and "R2" in counts and counts["R1"] != counts["R2"]:
        found.append(f"R1 has {counts['R1']} reads but R2 has {counts['R2']}: the pair is out of sync")
    for file in sample["files"]:
        if file["read_count"] == 0:
            found.append(f"{file['read']} has no reads")
    return found


def build_report(metrics: dict[str, Any], workset_id: str) -> dict[str, Any]:
    samples = []
    for sample in metrics["samples"]:
        files = [
            {"read": f["read"], "file": Path(f["path"]).name, **_derived({k: f[k] for k in COUNT_FIELDS})}
            for f in sample["files"]
        ]
        totals = _derived({k: sum(f[k] for f in files) for k in COUNT_FIELDS})
        entry = {"id": sample["id"], **totals, "files": files}
        entry["warnings"] = _warnings(entry)
        samples.append(entry)
    return {
        "workset_id": workset_id,
        "pipeline": "fastq-qc",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "definitions": {
            "gc_percent": "100 * (G + C) / (A + C + G + T); other bases (N, IUPAC) are not counted",
            "mean_quality": "mean Phred score (Phred+33) over all bases",
        },
        "samples": samples,
    }


def render_html(report: dict[str, Any]) -> str:
    environment = Environment(
        loader=PackageLoader("stamen.pipelines.fastq_qc", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    return environment.get_template("qc_report.html").render(report=report)


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report", description="qc.json and qc.html from the QC metrics.")
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--workset-id", required=True)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        report = build_report(json.loads(args.metrics.read_text(encoding="utf-8")), args.workset_id)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"report: error: cannot read the QC metrics {args.metrics}: {exc}", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write(args.out_dir / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    _write(args.out_dir / REPORT_HTML, render_html(report))
    print(f"report: wrote {args.out_dir / REPORT_JSON} and {args.out_dir / REPORT_HTML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
