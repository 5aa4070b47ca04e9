"""Customer, user and API-key commands: registered on the main `stamen` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the customer commands to `app`."""
