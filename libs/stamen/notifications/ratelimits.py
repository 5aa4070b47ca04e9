"""Per-channel rate limits: token buckets, and the published limits they default to.

- Linear: requests authenticated with an API key are limited per user per hour, refilled as a leaky
  bucket at LIMIT / PERIOD (https://developers.linear.app/docs/graphql/working-with-the-graphql-api/rate-limiting
  says 2,500 requests per hour; the current page, https://linear.app/developers/rate-limiting, keeps the
  leaky bucket and the X-RateLimit-Requests-* headers). stamen defaults to 2,500 per hour per owner's key,
  counts every GraphQL request, and backs off on HTTP 429 / `RATELIMITED` until the reset it is told.
- Slack: incoming webhooks and chat.postMessage allow 1 message per second per channel, short bursts
  tolerated (https://api.slack.com/docs/rate-limits). A webhook in `slack` format gets 1 per second.
- Plain JSON webhooks and SNS have no published per-receiver limit; their defaults only keep one owner
  from flooding a receiver (settings in docs/configuration.md).

The buckets live in PostgreSQL (notification_rate_buckets), so every notifier replica shares them.
"""

from __future__ import annotations

from dataclasses import dataclass

LINEAR_REQUESTS_PER_HOUR = 2500
SLACK_MESSAGES_PER_SECOND = 1.0


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst: float

    def take(self, tokens: float, elapsed_seconds: float, cost: float = 1.0) -> tuple[float, float]:
        """Refill for `elapsed_seconds`, then take `cost`: (tokens left, 0) when there were enough,
        else (tokens unchanged but refilled, seconds until `cost` tokens are there)."""
        available = min(self.burst, tokens + max(0.0, elapsed_seconds) * self.per_second)
        if available >= cost:
            return available - cost, 0.0
        return available, (cost - available) / self.per_second
