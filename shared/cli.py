"""The `relay` command. Thin: it parses options and calls into the packages.

Sub-commands come from the ``relay.commands`` entry points (``ingress`` and ``workers`` each register
theirs), so this package never imports those.

Exit codes: 0 success; 1 a check failed (e.g. a drill lost messages); 2 bad usage or configuration;
3 not found; 4 broker unreachable; 5 store unreachable; 6 other transient failure.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import typer

from shared.errors import (
    BrokerUnavailable,
    ConfigError,
    NotFound,
    PermanentError,
    RelayError,
    StoreUnavailable,
    TransientError,
)
from shared.logs import configure_logging
from shared.settings import Settings, load_settings, use_config_file

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BROKER = 4
EXIT_STORE = 5
EXIT_TRANSIENT = 6

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


@cache
def settings() -> Settings:
    """The settings of this invocation, read once; logging is configured from them."""
    loaded = load_settings()
    configure_logging(level=loaded.log.level, json_output=loaded.log.json_output)
    return loaded


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


def _register_plugins() -> None:
    for entry_point in sorted(entry_points(group="relay.commands"), key=lambda ep: ep.name):
        entry_point.load()(app)


def main() -> None:
    _register_plugins()
    try:
        app()
    except RelayError as exc:
        typer.echo(f"relay: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
