"""Stream and subject names: the one place that says where events travel."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS_STREAM = "STAMEN_EVENTS"
EVENTS_PREFIX = "stamen.evt"
DLQ_STREAM = "STAMEN_DLQ"
DLQ_PREFIX = "stamen.dlq"
ADVISORIES_STREAM = "STAMEN_ADVISORIES"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
INTAKE_PREFIX = "stamen.intake"


# Events about the platform rather than one tenant (region.health_changed, cluster.drained) travel
# under this tenant token; tenant ids cannot start with "_", so it never collides with a customer's.
PLATFORM_TENANT = "_platform"


def event_subject(tenant_id: str, event_type: str) -> str:
    """stamen.evt.<tenant>.<event type>, e.g. stamen.evt.acme.workset.submitted."""
    return f"{EVENTS_PREFIX}.{tenant_id}.{event_type}"


def event_filter(event_type: str, tenant_id: str = "*") -> str:
    return f"{EVENTS_PREFIX}.{tenant_id}.{event_type}"


def dlq_subject(reason: str, consumer: str) -> str:
    """reason is `max_deliver` (handler kept failing) or `undecodable` (parked on arrival)."""
    return f"{DLQ_PREFIX}.{reason}.{consumer}"


def max_deliveries_advisory(stream: str, consumer: str = "*") -> str:
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"


@dataclass(frozen=True)
class StreamDefinition:
    name: str
    subjects: tuple[str, ...]
    max_age_seconds: float
    description: str


STREAMS: tuple[StreamDefinition, ...] = (
    StreamDefinition(
        EVENTS_STREAM, (f"{EVENTS_PREFIX}.>",), 30 * 86400, "workset lifecycle and platform events"
    ),
    StreamDefinition(DLQ_STREAM, (f"{DLQ_PREFIX}.>",), 90 * 86400, "messages no consumer could handle"),
    # Advisories are published by the server whether or not anyone listens; capturing them in a
    # stream means a dead letter is not lost while its forwarder is down.
    StreamDefinition(
        ADVISORIES_STREAM,
        (max_deliveries_advisory(EVENTS_STREAM, ">"),),
        7 * 86400,
        "max-deliveries advisories, turned into dead letters",
    ),
)
