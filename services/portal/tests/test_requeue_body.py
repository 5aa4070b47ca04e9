"""Why the API never answers REQUEUE_CHANGE_INVALID: the retry / DLQ requeue body is validated as
RequeueChanges itself, and what the handler passes on (the fields sent) always parses again in
commands.requeue. A bad change is REQUEST_INVALID at the body (tests/api/test_operations.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.portal.api.models import RequeueRequest
from services.portal.api.openapi import build_document
from services.portal.api.routes import ROUTES
from stamen.retry import CHANGEABLE_FIELDS, RequeueChanges

_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
# Values in range, out of range and of the wrong type, for the changeable fields and a few others.
_VALUES = st.one_of(
    _ANY_JSON,
    st.integers(-2, 12),
    st.integers(0, 31 * 86400),
    st.floats(0.5, 17.0),
    st.sampled_from(["urgent", "normal", "low", "high", "", "west-1"]),
)
_FIELDS = st.sampled_from([*CHANGEABLE_FIELDS, "pipeline", "samples"])
_IN_RANGE = st.fixed_dictionaries(
    {},
    optional={
        "max_retries": st.integers(0, 10),
        "max_duration_seconds": st.none() | st.integers(1, 30 * 86400),
        "priority": st.sampled_from(["urgent", "normal", "low"]),
        "preferred_cluster": st.none() | st.text(min_size=1, max_size=20),
        "memory_multiplier": st.integers(1, 16) | st.floats(1.0, 16.0),
    },
)


@given(changes=_IN_RANGE | st.dictionaries(_FIELDS, _VALUES, max_size=6))
def test_every_change_set_the_body_accepts_parses_again_unchanged(changes: dict[str, Any]) -> None:
    raw = json.dumps({"changes": changes})
    try:
        accepted = RequeueRequest.model_validate_json(raw).changes
    except ValidationError:
        return  # REQUEST_INVALID at the body: nothing reaches commands.requeue
    passed_on = accepted.model_dump(exclude_unset=True)  # what worksets.requeue_changes hands on
    assert set(passed_on) == set(changes)
    assert RequeueChanges.parse(passed_on) == accepted  # would raise RequeueChangesInvalid otherwise


def test_the_body_schema_has_no_defaults_and_shows_the_limits() -> None:
    """Fields not sent are left unchanged, so the schema must not suggest a value for them."""
    schema = build_document(ROUTES)["components"]["schemas"]["RequeueChanges"]  # as the OpenAPI serves it
    props = schema["properties"]
    assert set(props) == set(CHANGEABLE_FIELDS) and "required" not in schema
    assert not [name for name, prop in props.items() if "default" in prop]
    assert (props["memory_multiplier"]["minimum"], props["memory_multiplier"]["maximum"]) == (1.0, 16.0)
    assert (props["max_retries"]["minimum"], props["max_retries"]["maximum"]) == (0, 10)
    assert props["priority"]["enum"] == ["urgent", "normal", "low"]
    nullable = {name for name, prop in props.items() if {"type": "null"} in prop.get("anyOf", [])}
    assert nullable == {"max_duration_seconds", "preferred_cluster"}
