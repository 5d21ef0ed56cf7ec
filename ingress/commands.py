"""`relay` sub-commands of the ingress package."""

from __future__ import annotations

import typer

from shared.cli import settings
from shared.store.migrate import upgrade

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Run the Alembic migrations (the only way the schema is made)."""
    upgrade(settings().store, revision)
    typer.echo(f"store at revision {revision}")


def register(app: typer.Typer) -> None:
    """Add the ingress commands to the `relay` app."""
    app.add_typer(db_app, name="db")
