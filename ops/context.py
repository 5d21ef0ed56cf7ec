"""What every `relay` sub-command shares: the settings of this invocation, the exit codes, the check of a
site name given as an option, and where `make run` keeps its deployment's run directory.

Exit codes: 0 success; 1 a check failed (e.g. a drill lost messages); 2 bad usage or configuration;
3 not found; 4 broker unreachable; 5 store unreachable; 6 other transient failure; 130 interrupted.

Light on purpose: the entry point imports it before anything that takes time to load.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from shared.errors import ValidationFailed

if TYPE_CHECKING:
    from shared.settings import Settings

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BROKER = 4
EXIT_STORE = 5
EXIT_TRANSIENT = 6
EXIT_INTERRUPTED = 130


@cache
def settings() -> Settings:
    """The settings of this invocation, read once; logging is configured from them."""
    from shared.logs import configure_logging
    from shared.settings import load_settings

    loaded = load_settings()
    configure_logging(level=loaded.log.level, json_output=loaded.log.json_output)
    return loaded


def local_run_dir() -> Path:
    """The run directory `make run` gives `relay up` (logs, demo key, run file): in the data directory, so
    a command in any folder finds the running deployment."""
    from shared.config_file import data_dir

    return data_dir() / "run"


def running_deployment_config() -> Path | None:
    """The configuration file of the `relay up` running in `local_run_dir()`, if any: what a command reads
    when none is named, so that `relay status` in another terminal sees the sites `make run` runs."""
    from ops.run_dir import read_run_file
    from shared.errors import ConfigError

    try:
        run = read_run_file(local_run_dir())
    except ConfigError:
        return None  # a damaged run file: it only ever saves naming the configuration
    if run is None or run.config is None or not run.config.is_file():
        return None
    return run.config


def check_site(
    config: Settings, site: str | None, *, option: str = "--site", known: Collection[str] = ()
) -> None:
    """A site named on the command line is configured (or one of `known`, e.g. sites the store still has
    dead letters of); otherwise `ValidationFailed` (exit 2) names the option and the configured sites."""
    if site is None or site in config.sites or site in known:
        return
    names = ", ".join(config.site_names) or "none"
    raise ValidationFailed(
        [{"field": option, "message": f"unknown site {site!r}; configured sites: {names}"}]
    )
