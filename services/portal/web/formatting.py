"""Jinja filters: dates, sizes, money and durations as people read them."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def size(value: float | int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(amount) < 1000 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if 0 < value < 0.01:
        return "< $0.01"
    return f"${value:,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def number(value: float | int | None, digits: int = 2) -> str:
    """Grouped thousands; a figure too small for `digits` decimals says so rather than reading as zero."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if 0 < abs(value) < 10**-digits:
            return f"< {10**-digits:.{digits}f}" if digits else "< 1"
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def install(env: jinja2.Environment) -> None:
    env.filters.update(when=when, day=day, iso=iso, size=size, usd=usd, duration=duration, number=number)
