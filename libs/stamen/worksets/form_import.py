"""Importer for the portal/API form: a JSON or YAML mapping shaped like `WorksetSpec`."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from stamen.worksets.documents import as_mapping, findings_from_validation_error, load_yaml_mapping
from stamen.worksets.findings import Finding, has_errors
from stamen.worksets.spec import WorksetSpec


class ImportResult(BaseModel):
    """A spec when the input could be read into one (possibly with warnings), else only findings."""

    model_config = ConfigDict(frozen=True)

    spec: WorksetSpec | None
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return self.spec is not None and not has_errors(self.findings)


def import_form(data: bytes | str | Mapping[str, object], *, source: str | None = "form") -> ImportResult:
    """Import a form submission: raw JSON/YAML text or bytes, or an already-decoded mapping.

    JSON is read with the YAML loader (JSON documents are YAML) so both arrive through one path."""
    parsed = (
        as_mapping(data, source=source)
        if isinstance(data, Mapping)
        else load_yaml_mapping(data, source=source)
    )
    if parsed.value is None:
        return ImportResult(spec=None, findings=parsed.findings)
    try:
        spec = WorksetSpec.model_validate(parsed.value)
    except ValidationError as exc:
        sources = dict.fromkeys(parsed.value, source) if source else None
        return ImportResult(spec=None, findings=findings_from_validation_error(exc, sources=sources))
    return ImportResult(spec=spec, findings=[])
