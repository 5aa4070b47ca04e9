"""One HTTP exchange with the portal, over the standard library (a CLI needs no event loop for this).

Every status comes back as an `Answer`; only a failure to reach the server at all raises."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from stamen.remote.errors import RemoteError

USER_AGENT = "stamen-cli"
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str  # the media type alone, lower case, without parameters
    body: bytes
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json" or self.content_type.endswith("+json")

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _answer(status: int, headers: Message, body: bytes) -> Answer:
    media = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    return Answer(status=status, content_type=media, body=body, headers={k: v for k, v in headers.items()})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would send the credentials to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx: it comes back as an Answer


_OPENER = urllib.request.build_opener(_NoRedirects)


def send(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Answer:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"User-Agent": USER_AGENT, **(headers or {})}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:  # a 4xx/5xx is an answer, not a failure to connect
        with exc:
            return _answer(exc.code, exc.headers, exc.read())
    except urllib.error.URLError as exc:
        raise RemoteError(
            "CONNECTION_FAILED",
            f"could not reach {url}: {exc.reason}; is the portal running there (check --url / STAMEN_URL)?",
            {"url": url},
        ) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, a non-HTTP server
        raise RemoteError(
            "CONNECTION_FAILED", f"could not reach {url}: {exc or type(exc).__name__}", {"url": url}
        ) from None
