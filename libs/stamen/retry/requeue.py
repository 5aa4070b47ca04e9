"""What an operator may change when sending a workset back to the queue, checked before anything is written.

Only fields that cannot invalidate the validated inputs are accepted: the retry budget, the run time
limit, the priority, the preferred cluster and the memory multiplier. A change to the samples or the
pipeline is a new workset (submit it again), because the validator's checks would no longer hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import MISSING, BaseModel, ConfigDict, Field, Strict, ValidationError

from stamen.domain.workset import Workset
from stamen.errors import CodedError
from stamen.worksets.spec import MaxDurationSeconds, MaxRetries, Priority

CHANGEABLE_FIELDS = (
    "max_retries",
    "max_duration_seconds",
    "priority",
    "preferred_cluster",
    "memory_multiplier",
)
# Strict: a requeue is an operator's explicit change, so "2" or true is refused rather than coerced.
_StrictMaxRetries = Annotated[MaxRetries, Strict()]
_StrictMaxDuration = Annotated[MaxDurationSeconds, Strict()]
_MemoryMultiplier = Annotated[float, Strict(), Field(ge=1.0, le=16.0, allow_inf_nan=False)]


class RequeueChangesInvalid(CodedError, ValueError):
    code = "REQUEUE_CHANGE_INVALID"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class RequeueChanges(BaseModel):
    """Each field is optional: a field sent replaces the workset's value (and its spec's); a field not sent
    leaves it unchanged. null is accepted only where it means something: it removes the run time limit
    (max_duration_seconds) or the preferred cluster."""

    # A field not sent is MISSING rather than a default, so the JSON Schema shows no default (one would
    # read as "not sending it sets this") and `apply` sees exactly what was sent.
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: _StrictMaxRetries | MISSING = Field(
        default=MISSING, description="a fresh retry budget of this size; not sent: unchanged"
    )
    max_duration_seconds: _StrictMaxDuration | MISSING | None = Field(
        default=MISSING, description="stop a run after this long; null removes the limit; not sent: unchanged"
    )
    priority: Priority | MISSING = Field(default=MISSING, description="not sent: unchanged")
    preferred_cluster: Annotated[str, Field(min_length=1)] | MISSING | None = Field(
        default=MISSING,
        description="admission's preferred cluster; null removes the preference; not sent: unchanged",
    )
    memory_multiplier: _MemoryMultiplier | MISSING = Field(
        default=MISSING,
        description="memory of every step relative to the pipeline's request; not sent: unchanged",
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
        spec = dict(ws.spec)
        if self.max_retries is not MISSING:
            ws.max_retries = spec["max_retries"] = self.max_retries
        if self.max_duration_seconds is not MISSING:
            ws.max_duration_seconds = self.max_duration_seconds
            _set_or_drop(spec, "max_duration_seconds", self.max_duration_seconds)
        if self.priority is not MISSING:
            ws.priority = spec["priority"] = self.priority
        if self.preferred_cluster is not MISSING:
            _set_or_drop(spec, "preferred_cluster", self.preferred_cluster)
        if self.memory_multiplier is not MISSING:
            ws.memory_multiplier = self.memory_multiplier
        ws.spec = spec


def _set_or_drop(spec: dict[str, Any], key: str, value: object) -> None:
    if value is None:
        spec.pop(key, None)
    else:
        spec[key] = value
