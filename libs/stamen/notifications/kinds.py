"""What people are told about: the notification kinds, who they are for, and how serious each is.

A kind is the product's word ("failed and will retry"); the event types are the bus's words. The map
between them is here and nowhere else. Severities are the diagnostics vocabulary (one definition).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from stamen.diagnostics.codes import Severity


class Kind(StrEnum):
    # --- a tenant's worksets
    SUBMITTED = "submitted"
    VALIDATED = "validated"
    REJECTED = "rejected"
    STARTED = "started"
    COMPLETED = "completed"
    RETRYING = "retrying"  # failed, and will retry (workset.retry_scheduled)
    FAILED = "failed"  # failed for good: dead-lettered (retries used up, not retryable, retries off)
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    # --- operators
    REGION_HEALTH = "region_health"
    CLUSTER_DRAINED = "cluster_drained"
    DEAD_LETTERS_PILING_UP = "dead_letters_piling_up"


TENANT_KINDS: tuple[Kind, ...] = (
    Kind.SUBMITTED,
    Kind.VALIDATED,
    Kind.REJECTED,
    Kind.STARTED,
    Kind.COMPLETED,
    Kind.RETRYING,
    Kind.FAILED,
    Kind.CANCELLED,
    Kind.REQUEUED,
)
OPERATOR_KINDS: tuple[Kind, ...] = (Kind.REGION_HEALTH, Kind.CLUSTER_DRAINED, Kind.DEAD_LETTERS_PILING_UP)

# A delivery's state (notification_deliveries.state), and an SNS subscription's protocol and status
# (notification_subscriptions): the tables' CHECKs, the API's and the CLI's filters.
DeliveryState = Literal["pending", "sending", "delivered", "failed", "skipped"]
SubscriptionProtocol = Literal["email", "sms"]
SubscriptionStatus = Literal["pending_confirmation", "confirmed"]

# The owner of the operators' preferences and deliveries. Customer ids start with [a-z0-9], so no
# tenant can ever be called this.
OPERATORS = "@operators"

# Event type -> kind. workset.queued is a kind only when an operator requeued the workset (the
# handler reads that from the history); its first queueing is "validated", a retry's is "retrying".
EVENT_KINDS: dict[str, Kind] = {
    "workset.submitted": Kind.SUBMITTED,
    "workset.validated": Kind.VALIDATED,
    "workset.rejected": Kind.REJECTED,
    "workset.started": Kind.STARTED,
    "workset.completed": Kind.COMPLETED,
    "workset.retry_scheduled": Kind.RETRYING,
    "workset.dead_lettered": Kind.FAILED,
    "workset.cancelled": Kind.CANCELLED,
    "workset.queued": Kind.REQUEUED,
    "region.health_changed": Kind.REGION_HEALTH,
    "cluster.drained": Kind.CLUSTER_DRAINED,
}

DEFAULT_SEVERITY: dict[Kind, Severity] = {
    Kind.SUBMITTED: Severity.INFO,
    Kind.VALIDATED: Severity.INFO,
    Kind.STARTED: Severity.INFO,
    Kind.COMPLETED: Severity.INFO,
    Kind.REQUEUED: Severity.INFO,
    Kind.REJECTED: Severity.WARNING,
    Kind.CANCELLED: Severity.WARNING,
    Kind.RETRYING: Severity.WARNING,
    Kind.FAILED: Severity.ERROR,
    Kind.REGION_HEALTH: Severity.WARNING,
    Kind.CLUSTER_DRAINED: Severity.WARNING,
    Kind.DEAD_LETTERS_PILING_UP: Severity.ERROR,
}

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2, Severity.CRITICAL: 3}


def rank(severity: Severity) -> int:
    """info < warning < error < critical."""
    return _RANK[severity]


def at_least(severity: Severity) -> list[Severity]:
    """The severities as serious as `severity` or more (an SNS filter policy's list)."""
    return [s for s in _RANK if _RANK[s] >= _RANK[severity]]


def kinds_for(owner: str) -> tuple[Kind, ...]:
    return OPERATOR_KINDS if owner == OPERATORS else TENANT_KINDS
