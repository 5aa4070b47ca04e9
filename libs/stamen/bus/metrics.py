"""Prometheus metrics of the bus and the outbox relay."""

from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter(
    "stamen_events_consumed_total", "Messages handled by a consumer", ["consumer", "event_type", "outcome"]
)
HANDLER_SECONDS = Histogram("stamen_handler_seconds", "Handler duration", ["consumer"])
IN_FLIGHT = Gauge("stamen_handlers_in_flight", "Messages being handled now", ["consumer"])
PUBLISHED = Counter("stamen_outbox_published_total", "Outbox rows published to JetStream", ["result"])
OUTBOX_REFUSED = Counter(
    "stamen_outbox_refused_total",
    "Outbox rows the broker refused: set aside to retry, or parked",
    ["outcome"],
)
DEAD_LETTERED = Counter("stamen_dead_letters_total", "Messages moved to the dead-letter stream", ["consumer"])
INTAKE_REPLIES_REFUSED = Counter(
    "stamen_nats_intake_replies_refused_total",
    "NATS intake requests dropped unanswered because their reply subject is not under the sender's inbox prefix",
    ["tenant"],
)
