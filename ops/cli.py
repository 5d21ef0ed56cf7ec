"""The `relay` command. Thin: it parses options and calls into the packages.

Exit codes are listed in `ops.context`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ops import commands, drill, launcher, service_commands, tenants_cli
from ops.context import (
    EXIT_BROKER,
    EXIT_CHECK_FAILED,
    EXIT_NOT_FOUND,
    EXIT_STORE,
    EXIT_TRANSIENT,
    EXIT_USAGE,
    settings,
)
from shared.errors import (
    BrokerUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    RelayError,
    StoreUnavailable,
    TransientError,
)
from shared.settings import use_config_file

app = typer.Typer(
    name="relay",
    help="Geo-redundant store-and-forward SMS relay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    config: Path | None = typer.Option(
        None, "--config", envvar="RELAY_CONFIG", help="TOML configuration file.", dir_okay=False
    ),
) -> None:
    use_config_file(config)
    settings.cache_clear()


for _module in (service_commands, commands, launcher, drill, tenants_cli):
    _module.register(app)


def exit_code_for(exc: RelayError) -> int:
    if isinstance(exc, BrokerUnavailable):
        return EXIT_BROKER
    if isinstance(exc, StoreUnavailable):
        return EXIT_STORE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConfigError | PermanentError):
        return EXIT_USAGE
    if isinstance(exc, TransientError):
        return EXIT_TRANSIENT
    return EXIT_CHECK_FAILED


def main() -> None:
    try:
        app()
    except RelayError as exc:
        typer.echo(f"relay: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
