"""The envelope on the wire: every registered event type round-trips; anything else is refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from stamen.events import (
    EVENT_TYPES,
    Envelope,
    EventPayload,
    MalformedEvent,
    UndecodableMessage,
    UnknownEventType,
    decode_envelope,
    new_envelope,
)

# One sample per registered type with EVERY field set (so each field's JSON form is exercised).
# A new event type or field makes test_samples_cover_the_registry fail until it is added here.
FULL: dict[str, dict[str, Any]] = {
    "workset.submitted": {
        "name": "wgs-batch-7",
        "source": "api",
        "sample_count": 2,
    },
    "workset.validated": {"warning_count": 3, "cost_usd_median": 12.5},
    "workset.rejected": {"error_count": 2, "warning_count": 1, "codes": ["SNF-OBJ-001", "VAL-REF-001"]},
    "workset.queued": {"priority": "urgent", "attempt": 2},
    "workset.scheduled": {
        "cluster": "local-1",
        "reason": "affinity",
        "scores": {"local-1": 0.75, "slurm": 0.1},
    },
    "workset.started": {"cluster": "local-1", "attempt": 2},
    "workset.step_started": {"step": "align", "attempt": 2},
    "workset.step_completed": {
        "step": "align",
        "attempt": 2,
        "resources": {"cpu_seconds": 12.5, "max_rss_mb": 300.0},
    },
    "workset.completed": {"attempt": 2, "outputs": {"report": "s3://bucket/report.html"}},
    "workset.failed": {
        "attempt": 2,
        "step": "align",
        "exit_code": 137,
        "signal": 9,
        "native_state": "OUT_OF_MEMORY",
        "reason": "killed ✓",
        "step_run_id": 41,
    },
    "workset.diagnosed": {
        "attempt": 2,
        "code": "OOM",
        "retry_class": "resources",
        "retryable": True,
    },
    "workset.retry_scheduled": {
        "attempt": 3,
        "due_at": datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        "delay_seconds": 60.5,
    },
    "workset.dead_lettered": {
        "reason": "retries_exhausted",
        "attempts": 4,
        "attempt": 4,
        "code": "WS-NET-001",
        "retry_class": "transient",
        "retryable": True,
        "detail": "failed 4 time(s); the retry budget of 3 is used up",
    },
    "workset.cancelled": {"cancelled_by": "ops@example.com", "reason": "wrong reference"},
    "workset.archived": {"archived_by": "retention"},
    "region.health_changed": {
        "status": "degraded",
        "latency_ms": 812.25,
        "detail": "slow squeue",
        "previous": "healthy",
        "actor": "regions",
    },
    "cluster.drained": {"cluster": "hpc-west", "drained_by": "operator:ops@example.com"},
    "customer.created": {"customer_id": "acme", "customer_name": "Acme Labs", "email": "lab@acme.example"},
    "notification.sent": {"channel": "email", "about_event_id": str(uuid.UUID(int=7)), "reference": "msg-1"},
    "notification.failed": {"channel": "sns", "about_event_id": str(uuid.UUID(int=8)), "error": "throttled"},
}


def minimal(event_type: str) -> dict[str, Any]:
    """Only the fields the model requires: the smallest payload a producer may send."""
    model = EVENT_TYPES[event_type]
    return {k: v for k, v in FULL[event_type].items() if model.model_fields[k].is_required()}


def envelope_for(payload: EventPayload, *, workset_id: str | None = "ws-1") -> Envelope:
    cause = uuid.uuid4()
    return new_envelope(
        payload,
        tenant_id="acme",
        region="us-west-2",
        workset_id=workset_id,
        correlation_id=uuid.uuid4(),
        causation_id=cause,
    )


def test_samples_cover_the_registry() -> None:
    assert set(FULL) == set(EVENT_TYPES), "add a sample to FULL for each new event type"
    for event_type, model in EVENT_TYPES.items():
        assert model.event_type == event_type
        assert set(FULL[event_type]) == set(model.model_fields), f"{event_type}: sample every field"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@pytest.mark.parametrize("shape", ["full", "minimal"])
def test_every_event_type_survives_encode_then_decode(event_type: str, shape: str) -> None:
    fields = FULL[event_type] if shape == "full" else minimal(event_type)
    payload = EVENT_TYPES[event_type](**fields)
    sent = envelope_for(payload)

    received = decode_envelope(sent.to_json())

    assert received == sent
    assert type(received.payload) is EVENT_TYPES[event_type]
    assert received.to_json() == sent.to_json()  # stable bytes: a re-publish is the same message
    assert sent.headers()["Nats-Msg-Id"] == str(sent.id)
    assert sent.headers()["Stamen-Event-Type"] == event_type


def test_event_without_a_workset_round_trips() -> None:
    sent = envelope_for(EVENT_TYPES["customer.created"](**FULL["customer.created"]), workset_id=None)
    assert decode_envelope(sent.to_json()) == sent


def wire(event_type: str = "workset.queued", **changes: Any) -> bytes:
    doc = json.loads(envelope_for(EVENT_TYPES[event_type](**FULL[event_type])).to_json())
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_unsupported_schema_version_is_refused(event_type: str) -> None:
    supported = EVENT_TYPES[event_type].schema_version
    for version in (supported + 1, 0, str(supported)):
        with pytest.raises(MalformedEvent) as refused:
            decode_envelope(wire(event_type, schema_version=version))
        assert refused.value.reason == "malformed"
        assert f"{event_type} schema_version {version!r} is not supported" in str(refused.value)
        assert f"reads version {supported}" in str(refused.value)


@pytest.mark.parametrize("bad_type", ["workset.teleported", "", "WORKSET.QUEUED", None, 42])
def test_unknown_event_type_is_refused(bad_type: object) -> None:
    with pytest.raises(UnknownEventType) as refused:
        decode_envelope(wire(type=bad_type))
    assert refused.value.reason == "unknown_type"
    assert f"unknown event type {bad_type!r}" in str(refused.value)
    assert "workset.queued" in str(refused.value)  # the message lists what is known


def test_missing_type_is_refused_as_unknown() -> None:
    doc = json.loads(wire())
    del doc["type"]
    with pytest.raises(UnknownEventType):
        decode_envelope(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xff\x00", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list, expected an object"),
        (b'"workset.queued"', "JSON str, expected an object"),
    ],
)
def test_body_that_is_not_a_json_object_is_refused(body: bytes, says: str) -> None:
    with pytest.raises(MalformedEvent, match=says):
        decode_envelope(body)


def test_payload_with_an_unknown_field_is_refused_naming_it() -> None:
    doc = json.loads(wire())
    doc["payload"]["colour"] = "blue"
    with pytest.raises(MalformedEvent, match=r"workset.queued failed validation: colour: Extra inputs"):
        decode_envelope(json.dumps(doc).encode())


def test_envelope_missing_a_field_is_refused_naming_it() -> None:
    doc = json.loads(wire())
    del doc["correlation_id"]
    with pytest.raises(MalformedEvent, match=r"correlation_id: Field required"):
        decode_envelope(json.dumps(doc).encode())


def test_refusals_share_the_base_consumers_park_on() -> None:
    assert issubclass(MalformedEvent, UndecodableMessage)
    assert issubclass(UnknownEventType, UndecodableMessage)


# What producers before the claim check wrote (schema_version 1): still readable during an upgrade.
V1_PAYLOADS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "workset.submitted": (
        {"name": "w", "source": "api", "spec": {"samples": [{"id": "S1"}, {"id": "S2"}]}},
        {"name": "w", "source": "api", "sample_count": 2},
    ),
    "workset.validated": (
        {"warnings": [{"code": "VAL-PAIR-004", "severity": "warning"}], "estimate": {"cost_usd_median": 3.5}},
        {"warning_count": 1, "cost_usd_median": 3.5},
    ),
    "workset.rejected": (
        {
            "findings": [
                {"code": "VAL-REF-001", "severity": "error"},
                {"code": "VAL-REF-001", "severity": "error"},
                {"code": "VAL-PAIR-004", "severity": "warning"},
            ]
        },
        {"error_count": 2, "warning_count": 1, "codes": ["VAL-REF-001"]},
    ),
    "workset.failed": (
        {"attempt": 1, "step": "align", "reason": "exit 3", "log_tail": "x" * 8000},
        {
            "attempt": 1,
            "step": "align",
            "reason": "exit 3",
            "step_run_id": None,
            "exit_code": None,
            "signal": None,
            "native_state": "",
        },
    ),
    "workset.diagnosed": (
        {
            "attempt": 1,
            "code": "WS-UNK-000",
            "retry_class": "unknown",
            "retryable": False,
            "candidates": [{"code": "WS-UNK-000"}],
            "report": "long text",
        },
        {"attempt": 1, "code": "WS-UNK-000", "retry_class": "unknown", "retryable": False},
    ),
}


@pytest.mark.parametrize("event_type", sorted(V1_PAYLOADS))
def test_version_1_events_are_read_in_the_current_shape(event_type: str) -> None:
    written, current = V1_PAYLOADS[event_type]
    doc = json.loads(wire(event_type))
    doc["schema_version"], doc["payload"] = 1, written
    received = decode_envelope(json.dumps(doc).encode())
    assert received.schema_version == EVENT_TYPES[event_type].schema_version == 2
    assert received.payload.model_dump(mode="json") == current
