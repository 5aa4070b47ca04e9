"""The built-in pipelines by name."""

from __future__ import annotations

from stamen.errors import CodedError
from stamen.pipelines.daylily import DAYLILY
from stamen.pipelines.fastq_qc import FASTQ_QC
from stamen.pipelines.model import Pipeline

_PIPELINES: dict[str, Pipeline] = {pipeline.name: pipeline for pipeline in (FASTQ_QC, DAYLILY)}
# The workset spec's analysis pipelines all run through Daylily; its dy-r arguments choose the analysis.
DAYLILY_ANALYSES = ("germline", "somatic", "rna-seq", "wgs", "wes")
_ALIASES: dict[str, str] = dict.fromkeys(DAYLILY_ANALYSES, DAYLILY.name)


class UnknownPipeline(CodedError, KeyError):
    code = "PIPELINE_UNKNOWN"

    def __str__(self) -> str:
        return str(self.args[0])


def pipeline_names() -> list[str]:
    """Every name `get_pipeline` accepts: pipeline names and the spec's analysis names."""
    return sorted([*_PIPELINES, *_ALIASES])


def get_pipeline(name: str) -> Pipeline:
    """The pipeline for a name from the workset spec (`fastq-qc`, `daylily`, or an analysis such as `germline`)."""
    try:
        return _PIPELINES[_ALIASES.get(name, name)]
    except KeyError:
        raise UnknownPipeline(f"no pipeline named {name!r}; known: {', '.join(pipeline_names())}") from None
