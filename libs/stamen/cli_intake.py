"""Intake commands (validate, schema, generate-yaml): registered on the main `stamen` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the intake commands to `app`."""
