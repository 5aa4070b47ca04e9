"""Webhooks: a JSON body (stamen's, or Slack's incoming-webhook form), signed with HMAC-SHA256 over
"<timestamp>.<body>" in `Stamen-Signature`, with the delivery's idempotency key in a header.

The URL is the tenant's choice, so the notifier refuses to be a way into its own network: loopback,
private, link-local and other special addresses are refused (the names are checked after DNS
resolution, on every connection) unless STAMEN_NOTIFY_WEBHOOK_ALLOW_PRIVATE is set; redirects are not
followed; http:// only with STAMEN_NOTIFY_WEBHOOK_ALLOW_HTTP.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from stamen.notifications.channels.base import Outgoing, RateGate, SendError, Sent, redact_url
from stamen.notifications.delivery import SendFailure
from stamen.notifications.secrets import WEBHOOK_SECRET, SecretStore, secret_name
from stamen.notifications.signing import EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not the public internet either


def address_refused(address: str) -> str | None:
    """Why a webhook may not connect to `address` (None: it may)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return f"{ip} is a loopback, private or special address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return f"{ip} is a shared (carrier-grade NAT) address"
    return None


def url_refused(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Why `url` may not be used as a webhook (checked when preferences are saved and at every send)."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return "must be https:// (http:// only with STAMEN_NOTIFY_WEBHOOK_ALLOW_HTTP)"
    host = parts.hostname or ""
    if not allow_private:
        if host in ("localhost",) or host.endswith((".localhost", ".local", ".internal")):
            return f"{host} is a local name (STAMEN_NOTIFY_WEBHOOK_ALLOW_PRIVATE allows it)"
        why = address_refused(host)
        if why:
            return why + " (STAMEN_NOTIFY_WEBHOOK_ALLOW_PRIVATE allows it)"
    return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves names, then keeps only public addresses (so DNS cannot point a webhook inside)."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if address_refused(r["host"]) is None]
        if not allowed:
            raise OSError(f"{host} resolves only to loopback, private or special addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(*, allow_private: bool) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=None if allow_private else PublicOnlyResolver(), limit=64)
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": "stamen-notifier"})


def json_body(out: Outgoing) -> dict[str, Any]:
    m = out.message
    return {
        "id": out.idempotency_key,
        "attempt": out.attempt,
        "kind": m.kind.value,
        "event_type": out.event_type,
        "event_id": out.event_id,
        "tenant": out.owner,
        "workset_id": out.workset_id,
        "severity": m.severity.value,
        "title": m.title,
        "text": m.text,
        "details": m.data,
        "links": m.links,
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(out: Outgoing) -> dict[str, Any]:
    """Slack's incoming-webhook form: `text` (notifications, fallback) and Block Kit blocks."""
    m = out.message
    body = _slack_escape(m.text.split("\n", 2)[-1] if "\n" in m.text else m.text)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": m.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body[:2900] or " "}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(f"{out.owner} · {m.severity.value} · {m.kind.value}"),
                }
            ],
        },
    ]
    return {"text": _slack_escape(m.title), "blocks": blocks}


class WebhookChannel:
    def __init__(
        self, session: aiohttp.ClientSession, secrets: SecretStore, *, allow_http: bool, allow_private: bool
    ) -> None:
        self._session = session
        self._secrets = secrets
        self._allow_http = allow_http
        self._allow_private = allow_private

    async def send(self, out: Outgoing, gate: RateGate) -> Sent:
        url = out.recipient
        refused = url_refused(url, allow_http=self._allow_http, allow_private=self._allow_private)
        if refused:
            raise SendError(SendFailure(f"webhook {redact_url(url)} refused: {refused}", retryable=False))
        secret = await self._secrets.get(secret_name(out.owner, WEBHOOK_SECRET))
        if not secret:
            raise SendError(SendFailure(f"no webhook signing secret is set for {out.owner}", retryable=False))
        slack = out.options.get("format") == "slack"
        body = json.dumps(slack_body(out) if slack else json_body(out), separators=(",", ":")).encode()
        await gate("slack" if slack else "webhook", f"webhook:{url}")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            IDEMPOTENCY_HEADER: out.idempotency_key,
            EVENT_HEADER: out.event_type,
        }
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                await resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise SendError(
                SendFailure(f"webhook {redact_url(url)} unreachable: {type(exc).__name__}", retryable=True)
            ) from None
        if 200 <= status < 300:
            return Sent(f"HTTP {status}")
        retryable = status in (408, 425, 429) or status >= 500
        delay = _seconds(retry_after) if status in (429, 503) else None
        raise SendError(SendFailure(f"webhook {redact_url(url)} answered HTTP {status}", retryable, delay))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
