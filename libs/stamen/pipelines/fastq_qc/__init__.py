"""fastq-qc: stage the FASTQs, compute read metrics, write a report, export it. Runs anywhere."""

from __future__ import annotations

from stamen.pipelines.model import Pipeline, PipelineStep

FASTQ_QC = Pipeline(
    name="fastq-qc",
    description="Read count, bases, GC% and mean quality of every sample's FASTQs, as qc.json and qc.html.",
    steps=[
        PipelineStep(
            name="stage",
            argv=["{python}", "-m", "stamen.pipelines.fastq_qc.stage", "--samples-json", "{samples_json}",
                  "--dest", "{workdir}/inputs", "--manifest", "{workdir}/inputs/manifest.json"],
            inputs=["every sample's r1/r2 URI"],
            outputs=["{workdir}/inputs/manifest.json"],
            memory_mb=1024,
            time_limit_seconds=6 * 3600,
        ),
        PipelineStep(
            name="qc",
            argv=["{python}", "-m", "stamen.pipelines.fastq_qc.qc", "--manifest", "{workdir}/inputs/manifest.json",
                  "--out", "{workdir}/qc/metrics.json"],
            inputs=["{workdir}/inputs/manifest.json"],
            outputs=["{workdir}/qc/metrics.json"],
            memory_mb=512,
            time_limit_seconds=12 * 3600,
        ),
        PipelineStep(
            name="report",
            argv=["{python}", "-m", "stamen.pipelines.fastq_qc.report", "--metrics", "{workdir}/qc/metrics.json",
                  "--workset-id", "{workset_id}", "--out-dir", "{workdir}/report"],
            inputs=["{workdir}/qc/metrics.json"],
            outputs=["{workdir}/report/qc.json", "{workdir}/report/qc.html"],
            memory_mb=512,
            time_limit_seconds=600,
        ),
        PipelineStep(
            name="export",
            argv=["{python}", "-m", "stamen.pipelines.fastq_qc.export", "--source-dir", "{workdir}/report",
                  "--export-uri", "{export_uri}", "--receipt", "{workdir}/export/receipt.json"],
            inputs=["{workdir}/report/qc.json", "{workdir}/report/qc.html"],
            outputs=["{export_uri}qc.json", "{export_uri}qc.html", "{workdir}/export/receipt.json"],
            memory_mb=1024,
            time_limit_seconds=3600,
        ),
    ],
)  # fmt: skip
