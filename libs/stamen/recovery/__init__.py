"""Recovery from PostgreSQL alone: the events a reconciler hands to a consumer's own handler when the
event itself was lost, parked or never delivered (see docs/retry-recovery.md, "Reconcilers")."""

from stamen.recovery.events import diagnosed_event, failed_event, submitted_event

__all__ = ["diagnosed_event", "failed_event", "submitted_event"]
