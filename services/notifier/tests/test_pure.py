"""The pure parts: planning (channels, final failures only, digest, quiet hours), signatures, rate
buckets, the retry budget, rendering and preference checks."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from stamen.diagnostics.codes import Severity
from stamen.notifications.delivery import DeliveryBudget, GiveUp, RetryAt, SendFailure
from stamen.notifications.kinds import OPERATORS, Kind, at_least
from stamen.notifications.messages import DiagnosisFacts, Facts, WorksetFacts, digest_message, render
from stamen.notifications.planning import Targets, digest_due, plan
from stamen.notifications.preferences import Channel, NotificationPreferences, PreferencesInput
from stamen.notifications.ratelimits import RateLimit
from stamen.notifications.signing import SignatureInvalid, sign, verify
from stamen.retry.backoff import BackoffPolicy

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
TOPIC = Targets("arn:aws:sns:us-west-2:123456789012:stamen-acme-events")
TEAM = str(uuid.uuid4())


def prefs(**doc: object) -> NotificationPreferences:
    return NotificationPreferences.model_validate(doc)


def channels(
    p: NotificationPreferences, kind: Kind, severity: Severity = Severity.INFO
) -> dict[Channel, datetime]:
    return {
        d.channel: d.not_before
        for d in plan(p, owner="acme", kind=kind, severity=severity, targets=TOPIC, now=NOW)
    }


def test_defaults_publish_every_kind_to_the_tenant_topic_and_nothing_else() -> None:
    assert channels(prefs(), Kind.SUBMITTED) == {Channel.SNS: NOW}
    assert (
        plan(prefs(), owner="acme", kind=Kind.FAILED, severity=Severity.ERROR, targets=Targets(None), now=NOW)
        == []
    )


def test_each_channel_gets_its_kinds_and_linear_defaults_to_failures() -> None:
    p = prefs(
        linear={"enabled": True, "team_id": TEAM},
        webhook={"enabled": True, "url": "https://hooks.example.org/x", "events": ["completed"]},
    )
    assert set(channels(p, Kind.RETRYING, Severity.WARNING)) == {Channel.SNS, Channel.LINEAR}
    assert set(channels(p, Kind.COMPLETED)) == {Channel.SNS, Channel.LINEAR, Channel.WEBHOOK}
    assert set(channels(p, Kind.STARTED)) == {Channel.SNS}


def test_only_final_failures_drops_failures_that_will_be_retried() -> None:
    p = prefs(only_final_failures=True)
    assert channels(p, Kind.RETRYING, Severity.WARNING) == {}
    assert set(channels(p, Kind.FAILED, Severity.ERROR)) == {Channel.SNS}


def test_digest_holds_low_severity_until_the_end_of_its_window() -> None:
    p = prefs(digest={"enabled": True, "interval_minutes": 60})
    [info] = plan(
        p,
        owner="acme",
        kind=Kind.STARTED,
        severity=Severity.INFO,
        targets=TOPIC,
        now=NOW + timedelta(minutes=5),
    )
    assert info.digest and info.not_before == NOW + timedelta(hours=1)
    [error] = plan(p, owner="acme", kind=Kind.FAILED, severity=Severity.ERROR, targets=TOPIC, now=NOW)
    assert not error.digest and error.not_before == NOW
    # Every notification of one window shares the due time, so they go out as one message.
    assert digest_due(NOW + timedelta(minutes=1), 60) == digest_due(NOW + timedelta(minutes=59), 60)


def test_quiet_hours_wrap_midnight_in_the_owners_time_zone() -> None:
    quiet = {"enabled": True, "start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
    p = prefs(quiet_hours=quiet)
    late = datetime(2025, 3, 4, 22, 30, tzinfo=UTC)  # 23:30 in Berlin (UTC+1)
    assert channels(p, Kind.COMPLETED) == {Channel.SNS: NOW}  # 13:00 in Berlin: not quiet
    assert plan(p, owner="acme", kind=Kind.COMPLETED, severity=Severity.INFO, targets=TOPIC, now=late)[
        0
    ].not_before == (
        datetime(2025, 3, 5, 6, 0, tzinfo=UTC)  # 07:00 Berlin
    )
    # Serious enough goes out at once even during quiet hours.
    assert (
        plan(p, owner="acme", kind=Kind.FAILED, severity=Severity.ERROR, targets=TOPIC, now=late)[
            0
        ].not_before
        == late
    )


def test_preferences_refuse_what_cannot_work_and_name_the_field() -> None:
    for doc, where in (
        ({"quiet_hours": {"timezone": "Mars/Olympus"}}, "timezone"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00+01:00"}}, "start"),
        ({"quiet_hours": {"end": "24:00"}}, "end"),
        ({"webhook": {"url": "ftp://x.example"}}, "url"),
        ({"webhook": {"url": "https://user:pw@x.example/h"}}, "url"),
        ({"webhook": {"secret": "short"}}, "secret"),
        ({"linear": {"team_id": "ENG"}}, "team_id"),
        ({"sns": {"sms": ["0170 1234"]}}, "sms"),
        ({"sns": {"colour": "red"}}, "colour"),
    ):
        with pytest.raises(ValidationError) as err:
            PreferencesInput.model_validate(doc)
        assert where in str(err.value), (doc, str(err.value))
    problems = dict(
        PreferencesInput.model_validate(
            {"linear": {"enabled": True}, "webhook": {"enabled": True, "events": ["region_health"]}}
        ).problems("acme")
    )
    assert set(problems) == {"linear.team_id", "webhook.url", "webhook.events[0]"}
    assert prefs(sns={"events": ["cluster_drained"]}).problems(OPERATORS) == []


def test_stored_preferences_never_hold_the_secrets() -> None:
    given = PreferencesInput.model_validate(
        {
            "linear": {"api_key": "lin_api_SECRET"},
            "webhook": {"secret": "s" * 32, "url": "https://h.example/x"},
        }
    )
    stored = given.stored().model_dump_json()
    assert "lin_api_SECRET" not in stored and "s" * 32 not in stored and "api_key" not in stored
    assert "SECRET" not in repr(given) and "s" * 32 not in str(given)


def test_signatures_verify_and_refuse_tampering_old_timestamps_and_other_secrets() -> None:
    body = b'{"kind":"failed"}'
    header = sign("k" * 20, 1_700_000_000, body)
    assert verify("k" * 20, header, body, now=1_700_000_100) == 1_700_000_000
    for secret, sent, at in (
        ("k" * 20, body + b" ", 1_700_000_100),  # tampered body
        ("k" * 20, body, 1_700_000_301),  # too old: a replay after the window
        ("x" * 20, body, 1_700_000_100),  # someone else's secret
    ):
        with pytest.raises(SignatureInvalid):
            verify(secret, header, sent, now=at)
    # Rotation: two v1 values, either secret verifies.
    rotated = header + ",v1=" + sign("n" * 20, 1_700_000_000, body).split("v1=")[1]
    assert verify("n" * 20, rotated, body, now=1_700_000_000)


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    slack = RateLimit(per_second=1.0, burst=1)
    tokens, wait = slack.take(1.0, 0.0)
    assert (tokens, wait) == (0.0, 0.0)
    tokens, wait = slack.take(tokens, 0.25)
    assert wait == pytest.approx(0.75)
    assert slack.take(tokens, 100.0) == (0.0, 0.0)  # refilled to the burst, never beyond
    linear = RateLimit(per_second=2500 / 3600, burst=50)
    assert linear.take(0.0, 0.0)[1] == pytest.approx(3600 / 2500)


def test_budget_retries_with_capped_jitter_then_gives_up() -> None:
    budget = DeliveryBudget(max_attempts=4, backoff=BackoffPolicy(initial_seconds=1, cap_seconds=4))
    rng = random.Random(1)
    flaky = SendFailure("HTTP 500", retryable=True)
    delays = [budget.after(flaky, n, rng) for n in (1, 2, 3)]
    assert all(
        isinstance(d, RetryAt) and 0 <= d.delay_seconds <= min(4, 2 ** (n - 1))
        for n, d in zip((1, 2, 3), delays, strict=True)
    )
    assert isinstance(budget.after(flaky, 4, rng), GiveUp)
    assert isinstance(budget.after(SendFailure("HTTP 404", retryable=False), 1, rng), GiveUp)
    told = budget.after(SendFailure("429", retryable=True, retry_after=30.0), 1, rng)
    assert told == RetryAt(30.0)


WS = WorksetFacts(
    id="ws-1", name="run7", tenant_id="acme", state="dead_lettered", attempt=3, retry_count=2, max_retries=2
)
OOM = DiagnosisFacts(
    code="WS-RES-001",
    name="Out-of-memory kill",
    summary="The kernel killed the job.",
    retry_class="resource",
    attempt=3,
    evidence=["slurmstepd: error: Detected 1 oom_kill event"],
    remediation=["Raise the rule's memory request."],
    severity=Severity.ERROR,
)


def facts(
    kind: Kind, *, diagnosis: DiagnosisFacts | None = None, detail: dict[str, Any] | None = None
) -> Facts:
    return Facts(
        kind=kind,
        severity=Severity.ERROR,
        event_id=str(uuid.UUID(int=1)),
        event_type="workset.dead_lettered",
        occurred_at=NOW,
        owner="acme",
        region="us-west-2",
        workset=WS,
        diagnosis=diagnosis,
        detail=detail or {},
        thread="ws-1",
    )


def test_a_final_failure_says_why_with_diagnosis_evidence_and_remediation() -> None:
    m = render(
        facts(Kind.FAILED, diagnosis=OOM, detail={"reason": "retries_exhausted", "attempts": 3}),
        "https://portal.example",
    )
    assert m.title == "Workset run7 failed for good: WS-RES-001"
    for text in (
        "its retries are used up",
        "oom_kill",
        "Raise the rule's memory request",
        "stamen dlq requeue ws-1",
    ):
        assert text in m.text and text in m.markdown
    assert m.links == {"workset": "https://portal.example/worksets/ws-1"}
    assert m.opens_thread and not m.resolves_thread and len(m.sms) <= 140
    assert m.data["diagnosis"]["code"] == "WS-RES-001" and m.data["reason"] == "retries_exhausted"
    # A reason this build does not know is shown as given (issue 14 may add new ones).
    assert "quota frozen" in render(facts(Kind.FAILED, detail={"reason": "quota frozen"})).text


def test_every_kind_renders_and_a_digest_lists_its_messages() -> None:
    details: dict[Kind, dict[str, Any]] = {
        Kind.RETRYING: {"retry": 1, "max_retries": 3, "due_at": "2025-03-04 12:05:00 UTC", "next_attempt": 2},
        Kind.REJECTED: {
            "findings": [{"code": "VAL-REF-001", "field": "reference_genome", "message": "unknown"}]
        },
        Kind.COMPLETED: {
            "cost_usd": 1.5,
            "estimate_usd": 2.0,
            "wall_seconds": 600,
            "outputs": {"export": "s3://b/x"},
        },
        Kind.REGION_HEALTH: {"status": "down", "detail": "no answer"},
        Kind.CLUSTER_DRAINED: {"cluster": "hpc", "actor": "ops", "running": 2},
        Kind.DEAD_LETTERS_PILING_UP: {
            "count": 7,
            "window_minutes": 60,
            "waiting": 9,
            "by_tenant": {"acme": 7},
        },
    }
    rendered = [render(facts(k, detail=details.get(k, {}))) for k in Kind]
    assert len({m.title for m in rendered}) == len(Kind)
    assert "$1.50 (estimated $2.00)" in rendered[list(Kind).index(Kind.COMPLETED)].text
    assert rendered[list(Kind).index(Kind.COMPLETED)].resolves_thread
    digest = digest_message("acme", rendered[:3])
    assert digest.title == "3 stamen notifications for acme" and all(
        m.title in digest.text for m in rendered[:3]
    )


def test_sms_filter_policies_list_severities_at_least_the_minimum() -> None:
    assert at_least(Severity.ERROR) == [Severity.ERROR, Severity.CRITICAL]
    assert at_least(Severity.INFO) == [Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL]
