"""`relay` sub-commands of the workers package."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the worker commands to the `relay` app."""
