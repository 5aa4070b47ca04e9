"""The words of a notification: facts read from PostgreSQL in, one rendered `Message` out (pure).

A message is rendered once, when the notification is planned, and stored with its deliveries: every
try and every resend sends the same words, and a channel adapter only chooses the form (SNS subject +
e-mail/SMS bodies, Linear markdown, webhook JSON or Slack blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from stamen.diagnostics.codes import Severity
from stamen.notifications.kinds import Kind, rank

MAX_LIST = 10  # findings, evidence lines, outputs shown in one message
SMS_LENGTH = 140


@dataclass(frozen=True)
class WorksetFacts:
    id: str
    name: str
    tenant_id: str
    state: str
    attempt: int
    retry_count: int
    max_retries: int
    pipeline: str | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class DiagnosisFacts:
    code: str
    name: str
    summary: str
    retry_class: str
    attempt: int
    evidence: list[str] = field(default_factory=list)
    remediation: list[str] = field(default_factory=list)
    severity: Severity | None = None


@dataclass(frozen=True)
class Facts:
    """Everything a message says. `detail` holds the kind's own small facts (see `render`)."""

    kind: Kind
    severity: Severity
    event_id: str
    event_type: str
    occurred_at: datetime
    owner: str
    region: str
    workset: WorksetFacts | None = None
    diagnosis: DiagnosisFacts | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # The thread a tracker keeps for this subject: a workset, a region, a cluster.
    thread: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Kind
    severity: Severity
    title: str
    text: str  # plain text: e-mail, webhook `text`, Slack
    markdown: str  # Linear
    sms: str
    thread: str | None
    opens_thread: bool  # a tracker opens (or reopens) an issue for it
    resolves_thread: bool  # a tracker closes the issue (a completed retry, a healthy region)
    data: dict[str, Any]  # the webhook's `details`
    links: dict[str, str]


def render(facts: Facts, portal_url: str | None = None) -> Message:
    headline, lines, md = _BODIES[facts.kind](facts)
    links: dict[str, str] = {}
    if portal_url and facts.workset is not None:
        links["workset"] = f"{portal_url.rstrip('/')}/worksets/{facts.workset.id}"
    context = _context_lines(facts)
    text = "\n".join([headline, "", *lines, "", *context, *(f"{k}: {v}" for k, v in links.items())]).strip()
    markdown = "\n".join(
        [*md, "", *(f"- {c}" for c in context), *(f"- [{k}]({v})" for k, v in links.items())]
    ).strip()
    return Message(
        kind=facts.kind,
        severity=facts.severity,
        title=headline,
        text=text,
        markdown=markdown,
        sms=_sms(headline),
        thread=facts.thread,
        opens_thread=_opens(facts),
        resolves_thread=_resolves(facts),
        data=_data(facts),
        links=links,
    )


def _opens(facts: Facts) -> bool:
    if facts.kind is Kind.REGION_HEALTH:
        return facts.detail.get("status") in ("degraded", "down")
    return facts.kind in (Kind.RETRYING, Kind.FAILED, Kind.REJECTED, Kind.CLUSTER_DRAINED,
                          Kind.DEAD_LETTERS_PILING_UP)  # fmt: skip


def _resolves(facts: Facts) -> bool:
    if facts.kind is Kind.REGION_HEALTH:
        return facts.detail.get("status") == "healthy"
    return facts.kind is Kind.COMPLETED


def _sms(headline: str) -> str:
    text = f"stamen: {headline}"
    return text if len(text) <= SMS_LENGTH else text[: SMS_LENGTH - 1] + "…"


def _context_lines(facts: Facts) -> list[str]:
    lines = []
    if facts.workset is not None:
        ws = facts.workset
        lines.append(f"Workset: {ws.name} ({ws.id}), tenant {ws.tenant_id}, state {ws.state}")
    lines.append(f"Severity: {facts.severity.value}; event {facts.event_type} {facts.event_id}")
    return lines


def _name(facts: Facts) -> str:
    return facts.workset.name if facts.workset is not None else "?"


def _diagnosis_lines(d: DiagnosisFacts | None) -> tuple[list[str], list[str]]:
    if d is None:
        return ["Diagnosis: none recorded yet."], ["**Diagnosis:** none recorded yet."]
    text = [f"Diagnosis: {d.code} {d.name} ({d.retry_class}, attempt {d.attempt})", d.summary]
    md = [f"**Diagnosis:** `{d.code}` {d.name} ({d.retry_class}, attempt {d.attempt})", "", d.summary]
    if d.evidence:
        text += ["Evidence:", *(f"  {line}" for line in d.evidence[:MAX_LIST])]
        md += ["", "**Evidence:**", "```", *d.evidence[:MAX_LIST], "```"]
    if d.remediation:
        text += ["Remediation:", *(f"  - {step}" for step in d.remediation)]
        md += ["", "**Remediation:**", *(f"- {step}" for step in d.remediation)]
    return text, md


Body = tuple[str, list[str], list[str]]  # headline, text lines, markdown lines


def _with_diagnosis(head: str, lines: list[str], diagnosis: DiagnosisFacts | None) -> Body:
    diag_text, diag_md = _diagnosis_lines(diagnosis)
    return head, [*lines, *diag_text], [f"**{head}**", "", *lines, "", *diag_md]


def _plain(head: str, lines: list[str]) -> Body:
    """A body whose markdown is its text under a bold headline."""
    return head, lines, [f"**{head}**", "", *lines]


def _submitted(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} submitted"
    lines = [f"Submitted via {d.get('source', '?')} with {d.get('samples', 0)} sample(s)."]
    return _plain(head, lines)


def _validated(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} validated and queued"
    lines = []
    estimate = d.get("estimate") or {}
    if estimate.get("cost_usd_median") is not None:
        lines.append(
            f"Estimated cost: ${estimate['cost_usd_median']:.2f} "
            f"(${estimate.get('cost_usd_low', 0):.2f} to ${estimate.get('cost_usd_high', 0):.2f})."
        )
    if d.get("warnings"):
        lines.append(f"{d['warnings']} warning(s) in the validation report.")
    return (
        head,
        lines or ["It passed validation."],
        [f"**{head}**", "", *(lines or ["It passed validation."])],
    )


def _rejected(f: Facts) -> Body:
    findings = f.detail.get("findings", [])
    head = f"Workset {_name(f)} rejected: {len(findings)} problem(s)"
    items = [
        f"{x.get('code', '?')} {x.get('field') or '-'}: {x.get('message', '')}"
        + (f" Fix: {x['fix']}" if x.get("fix") else "")
        for x in findings[:MAX_LIST]
    ]
    more = [f"... and {len(findings) - MAX_LIST} more"] if len(findings) > MAX_LIST else []
    lines = ["Fix these and submit it again:", *(f"  - {i}" for i in items), *more]
    md = [f"**{head}**", "", "Fix these and submit it again:", *(f"- `{i}`" for i in items), *more]
    return head, lines, md


def _started(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} started on {d.get('cluster', '?')} (attempt {d.get('attempt', 1)})"
    return _plain(head, [])


def _completed(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} completed"
    lines = []
    if d.get("cost_usd") is not None:
        estimate = d.get("estimate_usd")
        lines.append(
            f"Actual cost: ${d['cost_usd']:.2f}"
            + (f" (estimated ${estimate:.2f})." if estimate is not None else ".")
        )
    if d.get("wall_seconds") is not None:
        lines.append(f"Wall time: {d['wall_seconds'] / 60:.1f} min over {d.get('attempts', 1)} attempt(s).")
    outputs = dict(list((d.get("outputs") or {}).items())[:MAX_LIST])
    if outputs:
        lines += ["Outputs:", *(f"  {k}: {v}" for k, v in outputs.items())]
    md = [f"**{head}**", "", *lines]
    if f.detail.get("had_failures"):
        md.append("A retry succeeded: closing this issue.")
    return head, lines, md


def _retrying(f: Facts) -> Body:
    d = f.detail
    ws = f.workset
    head = (
        f"Workset {_name(f)} failed; retry {d.get('retry', '?')} of {d.get('max_retries', '?')} "
        f"at {d.get('due_at', '?')}"
    )
    lines = [f"Attempt {d.get('failed_attempt', ws.attempt if ws else '?')} failed; attempt "
             f"{d.get('next_attempt', '?')} starts at {d.get('due_at', '?')}."]  # fmt: skip
    return _with_diagnosis(head, lines, f.diagnosis)


_REASONS = {
    "retries_exhausted": "its retries are used up",
    "not_retryable": "the failure is not one a retry can fix",
    "retries_disabled": "retries are switched off",
}


def _failed(f: Facts) -> Body:
    d = f.detail
    code = f.diagnosis.code if f.diagnosis else "no diagnosis"
    head = f"Workset {_name(f)} failed for good: {code}"
    reason = str(d.get("reason", ""))
    lines = [
        f"It was dead-lettered after {d.get('attempts', '?')} attempt(s): {_REASONS.get(reason, reason)}.",
    ]
    if d.get("detail"):
        lines.append(str(d["detail"]))
    if f.workset is not None:
        lines.append(f"After fixing the cause: stamen dlq requeue {f.workset.id}")
    return _with_diagnosis(head, lines, f.diagnosis)


def _cancelled(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} cancelled by {d.get('actor', '?')}"
    lines = [f"Reason: {d['reason']}"] if d.get("reason") else []
    return _plain(head, lines)


def _requeued(f: Facts) -> Body:
    d = f.detail
    head = f"Workset {_name(f)} requeued by {d.get('actor', '?')} (attempt {d.get('attempt', '?')} next)"
    lines = [f"Reason: {d['reason']}"] if d.get("reason") else []
    return _plain(head, lines)


def _region(f: Facts) -> Body:
    d = f.detail
    head = f"Region {f.region} is {d.get('status', '?')}"
    lines = []
    if d.get("previous"):
        lines.append(f"It was {d['previous']}; changed by {d.get('actor') or 'the regions service'}.")
    if d.get("latency_ms") is not None:
        lines.append(f"Latency: {d['latency_ms']:.0f} ms.")
    if d.get("detail"):
        lines.append(str(d["detail"]))
    if d.get("status") == "down":
        lines.append("Its clusters take no new worksets until it is healthy again.")
    return _plain(head, lines)


def _drained(f: Facts) -> Body:
    d = f.detail
    head = f"Cluster {d.get('cluster', '?')} drained by {d.get('actor', '?')}"
    lines = [f"It takes no new worksets; {d.get('running', 0)} still running there will finish."]
    return _plain(head, lines)


def _piling_up(f: Facts) -> Body:
    d = f.detail
    head = f"{d.get('count', '?')} worksets dead-lettered in the last {d.get('window_minutes', '?')} min"
    lines = [f"{d.get('waiting', '?')} dead letters wait for an operator (stamen dlq ls)."]
    for label, key in (("By tenant", "by_tenant"), ("By diagnosis", "by_code")):
        counts = d.get(key) or {}
        if counts:
            lines.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return head, lines, [f"**{head}**", "", *(f"- {line}" for line in lines)]


_BODIES = {
    Kind.SUBMITTED: _submitted,
    Kind.VALIDATED: _validated,
    Kind.REJECTED: _rejected,
    Kind.STARTED: _started,
    Kind.COMPLETED: _completed,
    Kind.RETRYING: _retrying,
    Kind.FAILED: _failed,
    Kind.CANCELLED: _cancelled,
    Kind.REQUEUED: _requeued,
    Kind.REGION_HEALTH: _region,
    Kind.CLUSTER_DRAINED: _drained,
    Kind.DEAD_LETTERS_PILING_UP: _piling_up,
}


def _data(f: Facts) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": f.kind.value, "region": f.region, **f.detail}
    if f.workset is not None:
        doc["workset"] = {
            "id": f.workset.id,
            "name": f.workset.name,
            "tenant": f.workset.tenant_id,
            "state": f.workset.state,
            "attempt": f.workset.attempt,
            "retry_count": f.workset.retry_count,
            "max_retries": f.workset.max_retries,
        }
    if f.diagnosis is not None:
        doc["diagnosis"] = {
            "code": f.diagnosis.code,
            "name": f.diagnosis.name,
            "summary": f.diagnosis.summary,
            "retry_class": f.diagnosis.retry_class,
            "attempt": f.diagnosis.attempt,
            "evidence": f.diagnosis.evidence[:MAX_LIST],
            "remediation": f.diagnosis.remediation,
        }
    return doc


def digest_message(owner: str, messages: list[Message]) -> Message:
    """Several low-severity messages of one owner and channel, as one."""
    head = f"{len(messages)} stamen notifications for {owner}"
    text = "\n".join([head, "", *(f"- {m.title}" for m in messages)])
    worst = max(messages, key=lambda m: rank(m.severity))
    return Message(
        kind=worst.kind,
        severity=worst.severity,
        title=head,
        text=text,
        markdown=text,
        sms=_sms(head),
        thread=None,
        opens_thread=False,
        resolves_thread=False,
        data={
            "digest": [
                m.model_dump(mode="json", include={"kind", "severity", "title", "data"}) for m in messages
            ]
        },
        links={},
    )
