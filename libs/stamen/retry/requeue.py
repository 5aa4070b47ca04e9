"""What an operator may change when sending a workset back to the queue, checked before anything is written.

Only fields that cannot invalidate the validated inputs are accepted: the retry budget, the run time
limit, the priority, the preferred cluster and the memory multiplier. A change to the samples or the
pipeline is a new workset (submit it again), because the validator's checks would no longer hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from stamen.domain.workset import Workset

CHANGEABLE_FIELDS = (
    "max_retries",
    "max_duration_seconds",
    "priority",
    "preferred_cluster",
    "memory_multiplier",
)


class RequeueChangesInvalid(ValueError):
    code = "REQUEUE_CHANGE_INVALID"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class RequeueChanges(BaseModel):
    """Each field is optional; a field that is given replaces the workset's value (and its spec's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: StrictInt = Field(default=0, ge=0, le=10, description="a fresh retry budget of this size")
    max_duration_seconds: StrictInt | None = Field(
        default=None, ge=1, le=30 * 86400, description="stop a run after this long; null removes the limit"
    )
    priority: Literal["urgent", "normal", "low"] = "normal"
    preferred_cluster: str | None = Field(
        default=None, min_length=1, description="admission's preferred cluster; null removes the preference"
    )
    memory_multiplier: StrictFloat = Field(
        default=1.0, ge=1.0, le=16.0, description="memory of every step relative to the pipeline's request"
    )

    @classmethod
    def parse(cls, changes: Mapping[str, Any] | None) -> RequeueChanges:
        """Raises RequeueChangesInvalid naming the first bad field, why, and what is accepted."""
        try:
            return cls.model_validate(dict(changes or {}))
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else "changes"
            if error["type"] == "extra_forbidden":
                raise RequeueChangesInvalid(
                    f"{name}: cannot be changed on requeue; changeable fields: {', '.join(CHANGEABLE_FIELDS)} "
                    "(to change inputs or the pipeline, submit a new workset)",
                    field=name,
                ) from None
            raise RequeueChangesInvalid(
                f"{name}: {error['msg']} (got {error.get('input')!r})", field=name
            ) from None

    def describe(self) -> str:
        """`max_retries=5, priority='urgent'`: for the workset's history."""
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(self.model_fields_set))

    def apply(self, ws: Workset) -> None:
        """Write the given fields onto the workset and its spec (the spec stays the record of intent)."""
        given = self.model_fields_set
        spec = dict(ws.spec)
        if "max_retries" in given:
            ws.max_retries = spec["max_retries"] = self.max_retries
        if "max_duration_seconds" in given:
            ws.max_duration_seconds = self.max_duration_seconds
            _set_or_drop(spec, "max_duration_seconds", self.max_duration_seconds)
        if "priority" in given:
            ws.priority = spec["priority"] = self.priority
        if "preferred_cluster" in given:
            _set_or_drop(spec, "preferred_cluster", self.preferred_cluster)
        if "memory_multiplier" in given:
            ws.memory_multiplier = self.memory_multiplier
        ws.spec = spec


def _set_or_drop(spec: dict[str, Any], key: str, value: object) -> None:
    if value is None:
        spec.pop(key, None)
    else:
        spec[key] = value
