"""What a requeue may change: checked field by field, applied to the workset and its spec."""

from __future__ import annotations

import uuid

import pytest

from stamen.domain.lifecycle import WorksetState
from stamen.domain.workset import Workset
from stamen.retry import CHANGEABLE_FIELDS, RequeueChanges, RequeueChangesInvalid


def workset(**spec: object) -> Workset:
    return Workset(
        id="ws-1", tenant_id="acme", name="w", state=WorksetState.DEAD_LETTERED, region="us-west-2",
        correlation_id=uuid.uuid4(), spec=dict(spec), max_retries=1, max_duration_seconds=60,
    )  # fmt: skip


def test_only_the_given_fields_change_and_null_removes_a_limit_or_preference() -> None:
    ws = workset(pipeline="wgs", preferred_cluster="old", max_duration_seconds=60)
    changes = RequeueChanges.parse(
        {"max_duration_seconds": None, "preferred_cluster": None, "memory_multiplier": 2, "priority": "low"}
    )
    changes.apply(ws)
    assert ws.spec == {"pipeline": "wgs", "priority": "low"}
    assert (ws.max_duration_seconds, ws.memory_multiplier, ws.priority, ws.max_retries) == (
        None,
        2.0,
        "low",
        1,
    )
    assert changes.describe() == (
        "max_duration_seconds=None, memory_multiplier=2.0, preferred_cluster=None, priority='low'"
    )


def test_an_empty_change_set_changes_nothing() -> None:
    ws = workset(pipeline="wgs")
    RequeueChanges.parse(None).apply(ws)
    assert ws.spec == {"pipeline": "wgs"} and ws.max_retries == 1 and ws.max_duration_seconds == 60


@pytest.mark.parametrize(
    "changes,field,message",
    [
        ({"pipeline": "somatic"}, "pipeline", "pipeline: cannot be changed on requeue; changeable fields: "
                                              + ", ".join(CHANGEABLE_FIELDS)),
        ({"max_retries": 11}, "max_retries", "max_retries: Input should be less than or equal to 10 (got 11)"),
        ({"max_retries": True}, "max_retries", "max_retries: true is a boolean; give a number (got True)"),
        ({"max_retries": None}, "max_retries", "max_retries: Input should be a valid integer (got None)"),
        ({"max_duration_seconds": 0}, "max_duration_seconds", "greater than or equal to 1 (got 0)"),
        ({"memory_multiplier": 0.5}, "memory_multiplier", "greater than or equal to 1"),
        ({"memory_multiplier": "2"}, "memory_multiplier", "memory_multiplier: Input should be a valid number (got '2')"),
        ({"preferred_cluster": ""}, "preferred_cluster", "at least 1 character"),
        ({"priority": None}, "priority", "'urgent', 'normal' or 'low'"),
    ],
)  # fmt: skip
def test_a_bad_change_names_the_field_and_why(changes: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(RequeueChangesInvalid) as caught:
        RequeueChanges.parse(changes)
    assert caught.value.code == "REQUEUE_CHANGE_INVALID" and caught.value.field == field
    assert message in str(caught.value)
