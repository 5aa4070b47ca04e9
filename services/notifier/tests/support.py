"""Receivers the notifier's tests run for real on local ports: a webhook endpoint that verifies
signatures, rejects replays and counts effects once per idempotency key; and a stand-in for Linear's
GraphQL API (the one edge we cannot run: a SaaS) that keeps issues, comments and workflow states and
checks every request's operation, variables and Authorization header."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from stamen.notifications.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, SignatureInvalid, verify
from stamen.stack.ports import free_port


async def start_site(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@dataclass
class WebhookReceiver:
    """POST / : verify `Stamen-Signature`, refuse a replayed signature (409), then apply the effect once
    per `Stamen-Idempotency-Key`. `faults` are served first, one per request: an HTTP status, or
    "timeout" (hold the request longer than the notifier waits). `hold` blocks requests until set."""

    secret: str
    tolerance: float = 300.0
    faults: list[int | str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every request that arrived
    effects: Counter[str] = field(default_factory=Counter)  # key -> times applied (must stay 1)
    seen_signatures: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook/{path:.*}", self._handle)
        self._runner, base = await start_site(app)
        self.url = f"{base}/hook/T000/B000/secret-path"
        return self

    async def stop(self) -> None:
        self._stopped.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER)
        self.requests.append(
            {"headers": dict(request.headers), "body": json.loads(body), "at": time.monotonic()}
        )
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.faults:
            fault = self.faults.pop(0)
            if fault == "timeout":  # longer than the notifier waits
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), timeout=30)
                return web.Response(status=504)
            return web.Response(status=int(fault))
        try:
            verify(self.secret, header, body, now=time.time(), tolerance=self.tolerance)
        except SignatureInvalid as exc:
            self.rejected.append(str(exc))
            return web.json_response({"error": str(exc)}, status=401)
        assert header is not None
        if header in self.seen_signatures:
            self.rejected.append("replayed signature")
            return web.json_response({"error": "replayed"}, status=409)
        self.seen_signatures.add(header)
        key = request.headers[IDEMPOTENCY_HEADER]
        if key not in self.effects:  # the effect happens once per key, however often it arrives
            self.effects[key] += 1
        return web.json_response({"ok": True})

    def kinds(self) -> list[str]:
        return [r["body"].get("kind", "?") for r in self.requests]


OPERATIONS = {
    "StamenFindIssue": "issues(filter: {id: {eq: $id}}",
    "StamenIssueCreate": "issueCreate(input: $input)",
    "StamenFindComment": "comments(filter: {id: {eq: $id}}",
    "StamenCommentCreate": "commentCreate(input: $input)",
    "StamenWorkflowState": "workflowStates(filter: {team: {id: {eq: $teamId}}, type: {eq: $type}}",
    "StamenIssueUpdate": "issueUpdate(id: $id, input: $input)",
    "StamenLabels": "issueLabels(filter: {name: {in: $names}}",
}


@dataclass
class FakeLinear:
    """The part of Linear's GraphQL API the notifier uses, over real HTTP."""

    api_key: str
    team_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=lambda: {"stamen": str(uuid.uuid4())})
    states: dict[str, str] = field(
        default_factory=lambda: {"unstarted": str(uuid.uuid4()), "completed": str(uuid.uuid4())}
    )
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeLinear:
        app = web.Application()
        app.router.add_post("/graphql", self._handle)
        self._runner, base = await start_site(app)
        self.url = f"{base}/graphql"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, message: str, kind: str, status: int = 400) -> web.Response:
        self.refused.append(message)
        return web.json_response(
            {"errors": [{"message": message, "extensions": {"type": kind}}]}, status=status
        )

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self.api_key:
            return self._error("authentication required", "authentication error", 401)
        doc = await request.json()
        op, query, variables = doc.get("operationName"), doc.get("query", ""), doc.get("variables") or {}
        self.calls.append({"operation": op, "variables": variables})
        if op not in OPERATIONS or OPERATIONS[op] not in " ".join(query.split()):
            return self._error(f"unexpected operation {op}: {query}", "graphql error")
        if self.faults:
            return web.Response(status=self.faults.pop(0))
        data = getattr(self, "_" + op)(variables)
        if isinstance(data, web.Response):
            return data
        return web.json_response({"data": data})

    def _issue_out(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {k: issue[k] for k in ("id", "identifier", "url", "description")} | {
            "state": {"type": issue["state"]}
        }

    def _StamenFindIssue(self, v: dict[str, Any]) -> Any:
        issue = self.issues.get(v["id"])
        return {"issues": {"nodes": [self._issue_out(issue)] if issue else []}}

    def _StamenIssueCreate(self, v: dict[str, Any]) -> Any:
        data = v["input"]
        if data["id"] in self.issues:
            return self._error("Entity with this id already exists", "invalid input")
        if data["teamId"] != self.team_id:
            return self._error("team not found", "invalid input")
        number = len(self.issues) + 1
        self.issues[data["id"]] = {
            **data,
            "identifier": f"LAB-{number}",
            "url": f"https://linear.app/lab/issue/LAB-{number}",
            "state": "unstarted",
        }
        return {"issueCreate": {"success": True, "issue": self._issue_out(self.issues[data["id"]])}}

    def _StamenFindComment(self, v: dict[str, Any]) -> Any:
        return {"comments": {"nodes": [{"id": v["id"]}] if v["id"] in self.comments else []}}

    def _StamenCommentCreate(self, v: dict[str, Any]) -> Any:
        data = v["input"]
        if data["issueId"] not in self.issues or data["id"] in self.comments:
            return self._error("invalid comment", "invalid input")
        self.comments[data["id"]] = data
        return {"commentCreate": {"success": True, "comment": {"id": data["id"]}}}

    def _StamenWorkflowState(self, v: dict[str, Any]) -> Any:
        found = self.states.get(v["type"]) if v["teamId"] == self.team_id else None
        return {"workflowStates": {"nodes": [{"id": found, "name": v["type"]}] if found else []}}

    def _StamenIssueUpdate(self, v: dict[str, Any]) -> Any:
        issue = self.issues[v["id"]]
        issue["state"] = next(t for t, sid in self.states.items() if sid == v["input"]["stateId"])
        return {
            "issueUpdate": {"success": True, "issue": {"id": issue["id"], "state": {"type": issue["state"]}}}
        }

    def _StamenLabels(self, v: dict[str, Any]) -> Any:
        return {
            "issueLabels": {
                "nodes": [
                    {"id": i, "name": n, "team": None} for n, i in self.labels.items() if n in v["names"]
                ]
            }
        }

    def operations(self) -> list[str]:
        return [c["operation"] for c in self.calls]


async def add_customer(pool: asyncpg.Pool, tenant: str, topic_arn: str | None) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO customers (customer_id, customer_name, email, s3_bucket, sns_topic_arn,
                   max_concurrent_worksets, max_storage_gb, region, status)
               VALUES ($1, $1, 'lab@example.org', 'bucket-' || $1, $2, 2, 10, 'us-west-2', 'active')""",
            tenant,
            topic_arn,
        )


async def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
