"""The Daylily pipeline, described with the same model: it runs on a Daylily head node, not here.

stage      stamen's transfer stage: the samples' FASTQs into <workdir>/inputs
day-clone  `day-clone <daylily.day_clone_args>` ({workdir_name} substituted): a fresh analysis
           folder, DAYLILY_ANALYSIS_ROOT/<workdir_name>/daylily
dy-r       `dy-r <daylily.dy_r_args>` run in that folder after sourcing `dyoinit` (a login shell,
           because Daylily's environment comes from its activation script)
export     stamen's transfer export: the analysis folder's results/ to the spec's export_uri
"""

from __future__ import annotations

from stamen.pipelines.model import Pipeline, PipelineStep

# Where `day-clone` creates analysis folders on a Daylily head node (its default for the ubuntu user).
DAYLILY_ANALYSIS_ROOT = "/fsx/analysis_results/ubuntu"
DAYLILY_FOLDER = DAYLILY_ANALYSIS_ROOT + "/{workdir_name}/daylily"

DAYLILY = Pipeline(
    name="daylily",
    description="Daylily's Snakemake pipelines on a Daylily (AWS ParallelCluster) head node.",
    runs_locally=False,
    steps=[
        PipelineStep(
            name="stage",
            argv=["{python}", "-m", "stamen.pipelines.transfer", "stage", "--samples-json", "{samples_json}",
                  "--dest", "{workdir}/inputs", "--manifest", "{workdir}/inputs/manifest.json"],
            inputs=["every sample's r1/r2 URI"],
            outputs=["{workdir}/inputs/manifest.json"],
            memory_mb=2048,
            time_limit_seconds=12 * 3600,
        ),
        PipelineStep(
            name="day-clone",
            argv=["day-clone", "{day_clone_args}"],
            outputs=[DAYLILY_FOLDER],
            time_limit_seconds=1800,
        ),
        PipelineStep(
            name="dy-r",
            argv=["bash", "-lc", "cd " + DAYLILY_FOLDER + " && source dyoinit && {dy_r_command}"],
            inputs=[DAYLILY_FOLDER, "{workdir}/inputs/manifest.json"],
            outputs=[DAYLILY_FOLDER + "/results"],
            time_limit_seconds=72 * 3600,
        ),
        PipelineStep(
            name="export",
            argv=["{python}", "-m", "stamen.pipelines.transfer", "export", "--source-dir",
                  DAYLILY_FOLDER + "/results", "--export-uri", "{export_uri}",
                  "--receipt", "{workdir}/export/receipt.json"],
            inputs=[DAYLILY_FOLDER + "/results"],
            outputs=["{export_uri}", "{workdir}/export/receipt.json"],
            memory_mb=2048,
            time_limit_seconds=12 * 3600,
        ),
    ],
)  # fmt: skip
