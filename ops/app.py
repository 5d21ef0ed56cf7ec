"""The `relay` application: its root options and every sub-command, assembled from the packages.

`ops.cli.main` runs it; importing this module imports every command's dependencies, which takes a
moment, so the entry point imports it only once it can handle an interrupt.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ops import commands, drill, launcher, service_commands, tenants_cli
from ops.context import running_deployment_config, settings
from shared.config_file import use_config_file

app = typer.Typer(
    name="relay",
    help="Geo-redundant store-and-forward SMS relay.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help like any command-line tool: Rich's panels give every flag a `<bool>` value it takes none of.
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        envvar="RELAY_CONFIG",
        metavar="FILE",
        help="TOML configuration file (default: the one of the relay `make run` runs, if it runs).",
        dir_okay=False,
    ),
) -> None:
    if config is None and ctx.invoked_subcommand != "up":
        # Not for `relay up` itself: it names its own configuration to what it starts.
        config = running_deployment_config()
    use_config_file(config)
    settings.cache_clear()


for _module in (service_commands, commands, launcher, drill, tenants_cli):
    _module.register(app)
