"""Linear: one issue per thread (a workset, a region, a cluster), opened with `issueCreate`, commented on
by later notifications, closed by a resolving one (a completed retry, a healthy region).

Idempotent by construction: the issue's and each comment's id are chosen by stamen (Linear's
`IssueCreateInput.id` / `CommentCreateInput.id`: "The identifier in UUID v4 format"), derived from the
thread and the delivery key, and every create is preceded by a lookup of that id. A notifier killed
after Linear created the issue but before it recorded so finds the issue on its next try and creates
nothing twice. Schema: Linear's public GraphQL schema (linear/linear, packages/sdk/src/schema.graphql).
Authentication: a personal API key, sent as `Authorization: <key>` (OAuth tokens would be `Bearer`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import aiohttp

from stamen.diagnostics.codes import Severity
from stamen.notifications.channels.base import Outgoing, RateGate, SendError, Sent
from stamen.notifications.delivery import SendFailure
from stamen.notifications.secrets import LINEAR_API_KEY, SecretStore, secret_name

# Linear priorities: 0 none, 1 urgent, 2 high, 3 normal, 4 low.
PRIORITY = {Severity.CRITICAL: 1, Severity.ERROR: 2, Severity.WARNING: 3, Severity.INFO: 4}
# extensions.type of Linear's GraphQL errors (as the Linear SDK maps them) worth another try.
_RETRYABLE_TYPES = {"ratelimited", "internal error", "lock timeout", "network error"}

FIND_ISSUE = """query StamenFindIssue($id: ID!) {
  issues(filter: {id: {eq: $id}}, first: 1) { nodes { id identifier url description state { type } } }
}"""
CREATE_ISSUE = """mutation StamenIssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) { success issue { id identifier url state { type } } }
}"""
FIND_COMMENT = """query StamenFindComment($id: ID!) {
  comments(filter: {id: {eq: $id}}, first: 1) { nodes { id } }
}"""
CREATE_COMMENT = """mutation StamenCommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}"""
FIND_STATE = """query StamenWorkflowState($teamId: ID!, $type: String!) {
  workflowStates(filter: {team: {id: {eq: $teamId}}, type: {eq: $type}}, first: 1) { nodes { id name } }
}"""
UPDATE_ISSUE = """mutation StamenIssueUpdate($id: String!, $input: IssueUpdateInput!) {
  issueUpdate(id: $id, input: $input) { success issue { id state { type } } }
}"""
FIND_LABELS = """query StamenLabels($names: [String!]!) {
  issueLabels(filter: {name: {in: $names}}, first: 50) { nodes { id name team { id } } }
}"""


def stable_uuid(*parts: str) -> str:
    """A UUID in v4 format derived from `parts`: the same parts give the same id on every try."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


class LinearChannel:
    def __init__(self, session: aiohttp.ClientSession, api_url: str, secrets: SecretStore) -> None:
        self._session = session
        self._url = api_url
        self._secrets = secrets

    async def send(self, out: Outgoing, gate: RateGate) -> Sent:
        key = await self._secrets.get(secret_name(out.owner, LINEAR_API_KEY))
        if not key:
            raise SendError(SendFailure(f"no Linear API key is set for {out.owner}", retryable=False))
        call = _Calls(self._session, self._url, key, gate, f"linear:{out.owner}")
        m = out.message
        team = out.recipient
        issue_id = stable_uuid("stamen-issue", out.owner, team, m.thread or out.event_id)
        found = (await call(FIND_ISSUE, {"id": issue_id}))["issues"]["nodes"]
        if not found:
            if not m.opens_thread:
                return Sent("no open issue for this thread: nothing to comment on", skipped=True)
            labels = await self._label_ids(call, team, out.options.get("labels") or [])
            created = await call(
                CREATE_ISSUE,
                {
                    "input": {
                        "id": issue_id,
                        "teamId": team,
                        "title": f"[stamen] {m.title}"[:250],
                        "description": m.markdown,
                        "priority": PRIORITY[m.severity],
                        "labelIds": labels,
                    }
                },
            )
            issue = created["issueCreate"]["issue"]
            if out.options.get("resolved_later"):  # its thread was resolved before it could be opened
                await self._move(call, team, issue["id"], "completed")
            return Sent(str(issue["identifier"]))
        issue = found[0]
        closed = str(issue["state"]["type"]) in ("completed", "canceled")
        if m.opens_thread and issue.get("description") == m.markdown:
            # This very notification opened it, on a try that died before it was recorded.
            if out.options.get("resolved_later") and not closed:
                await self._move(call, team, issue["id"], "completed")
            return Sent(str(issue["identifier"]))
        comment_id = stable_uuid("stamen-comment", out.idempotency_key)
        if not (await call(FIND_COMMENT, {"id": comment_id}))["comments"]["nodes"]:
            body = {"id": comment_id, "issueId": issue["id"], "body": m.markdown}
            await call(CREATE_COMMENT, {"input": body})
        if m.resolves_thread and not closed:
            await self._move(call, team, issue["id"], "completed")
        elif m.opens_thread and closed:
            await self._move(call, team, issue["id"], "unstarted")
        return Sent(str(issue["identifier"]))

    async def _move(self, call: _Calls, team: str, issue_id: str, state_type: str) -> None:
        states = (await call(FIND_STATE, {"teamId": team, "type": state_type}))["workflowStates"]["nodes"]
        if not states:
            raise SendError(
                SendFailure(f"team {team} has no workflow state of type {state_type}", retryable=False)
            )
        await call(UPDATE_ISSUE, {"id": issue_id, "input": {"stateId": states[0]["id"]}})

    async def _label_ids(self, call: _Calls, team: str, names: list[str]) -> list[str]:
        """Labels of the workspace or of the team with these names; unknown names are left out."""
        if not names:
            return []
        nodes = (await call(FIND_LABELS, {"names": names}))["issueLabels"]["nodes"]
        return [n["id"] for n in nodes if n.get("team") is None or n["team"].get("id") == team]


class _Calls:
    """One GraphQL request per call, each through the rate gate; errors become SendFailures."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, key: str, gate: RateGate, bucket: str
    ) -> None:
        self._session = session
        self._url = url
        self._key = key
        self._gate = gate
        self._bucket = bucket

    async def __call__(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        await self._gate("linear", self._bucket)
        operation = query.split("(", 1)[0].split()[-1]
        try:
            async with self._session.post(
                self._url,
                json={"query": query, "variables": variables, "operationName": operation},
                headers={"Authorization": self._key, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                status = resp.status
                reset = _reset_in(resp.headers)
                raw = await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError(
                SendFailure(f"Linear unreachable: {type(exc).__name__}", retryable=True)
            ) from None
        try:
            doc = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            doc = {}
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if status == 429 or _error_type(errors) == "ratelimited":
            raise SendError(
                SendFailure(f"Linear rate limit ({operation})", retryable=True, retry_after=reset or 60.0)
            )
        if status >= 500 or status == 408:
            raise SendError(SendFailure(f"Linear HTTP {status} ({operation})", retryable=True))
        if errors:
            kind = _error_type(errors)
            message = str(errors[0].get("message", "")) if isinstance(errors[0], dict) else ""
            raise SendError(
                SendFailure(
                    f"Linear {kind or 'error'} ({operation}): {message[:300]}",
                    retryable=kind in _RETRYABLE_TYPES,
                )
            )
        if status >= 400 or not isinstance(doc.get("data"), dict):
            raise SendError(SendFailure(f"Linear HTTP {status} ({operation})", retryable=False))
        data: dict[str, Any] = doc["data"]
        return data


def _error_type(errors: Any) -> str | None:
    if not errors or not isinstance(errors, list) or not isinstance(errors[0], dict):
        return None
    extensions = errors[0].get("extensions") or {}
    value = extensions.get("type") or extensions.get("code")
    return str(value).lower() if value else None


def _reset_in(headers: Any) -> float | None:
    """Seconds until the rate limit resets: Retry-After, or X-RateLimit-Requests-Reset (epoch s or ms)."""
    after = headers.get("Retry-After")
    if after:
        try:
            return max(0.0, float(after))
        except ValueError:
            pass
    reset = headers.get("X-RateLimit-Requests-Reset")
    if reset:
        try:
            at = float(reset)
        except ValueError:
            return None
        at = at / 1000 if at > 1e11 else at
        return max(0.0, at - time.time())
    return None
