"""Who gets a notification, on which channel, and when: pure decisions from the preferences."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from stamen.diagnostics.codes import Severity
from stamen.notifications.kinds import Kind, rank
from stamen.notifications.preferences import Channel, NotificationPreferences


@dataclass(frozen=True)
class Targets:
    """Where the owner's channels point, as far as the store knows (None: not available)."""

    sns_topic_arn: str | None


@dataclass(frozen=True)
class PlannedDelivery:
    channel: Channel
    recipient: str  # topic ARN, Linear team id, webhook URL
    not_before: datetime  # quiet hours or the digest push this later
    digest: bool


def plan(
    prefs: NotificationPreferences,
    *,
    owner: str,
    kind: Kind,
    severity: Severity,
    targets: Targets,
    now: datetime,
) -> list[PlannedDelivery]:
    """One delivery per channel that hears of `kind` (`listening`)."""
    planned: list[PlannedDelivery] = []
    for channel, recipient in listening(prefs, owner=owner, kind=kind, targets=targets):
        # Linear threads one issue per workset: batching its comments would only delay them.
        digest = (
            channel is not Channel.LINEAR
            and prefs.digest.enabled
            and rank(severity) <= rank(prefs.digest.max_severity)
        )
        when = digest_due(now, prefs.digest.interval_minutes) if digest else now
        if rank(severity) < rank(prefs.quiet_hours.min_severity):
            when = prefs.quiet_hours.until(when) or when
        planned.append(PlannedDelivery(channel, recipient, when, digest))
    return planned


def listening(
    prefs: NotificationPreferences, *, owner: str, kind: Kind, targets: Targets
) -> list[tuple[Channel, str]]:
    """The channels that hear of `kind`, with their recipients: enabled, configured (a recipient), and
    choosing `kind`. Empty: nobody is told, whatever the event's facts say (they decide only the
    message, its severity and when it goes, never who gets it)."""
    if prefs.only_final_failures and kind is Kind.RETRYING:
        return []
    found: list[tuple[Channel, str]] = []
    for channel in Channel:
        recipient = _recipient(prefs, channel, targets)
        if recipient is not None and kind in prefs.events_for(channel, owner):
            found.append((channel, recipient))
    return found


def _recipient(prefs: NotificationPreferences, channel: Channel, targets: Targets) -> str | None:
    if channel is Channel.SNS:
        return targets.sns_topic_arn if prefs.sns.enabled else None
    if channel is Channel.LINEAR:
        return prefs.linear.team_id if prefs.linear.enabled else None
    return prefs.webhook.url if prefs.webhook.enabled else None


def digest_due(now: datetime, interval_minutes: int) -> datetime:
    """The end of the digest window `now` falls in: windows are aligned on the epoch, so every
    notification of one window shares its due time and goes out in one message."""
    step = interval_minutes * 60
    end = (math.floor(now.timestamp() / step) + 1) * step
    return datetime.fromtimestamp(end, UTC)
