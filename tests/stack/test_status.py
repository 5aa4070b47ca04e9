"""What `stamen status` shows of URLs: never a password."""

from __future__ import annotations

from stamen.stack.status import redact_url


def test_passwords_are_replaced_and_everything_else_kept() -> None:
    assert redact_url("nats://stamen:pw-1@127.0.0.1:4222") == "nats://stamen:***@127.0.0.1:4222"
    assert redact_url("postgresql://u:p%40ss@db:5432/stamen") == "postgresql://u:***@db:5432/stamen"
    assert redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert redact_url(None) is None
