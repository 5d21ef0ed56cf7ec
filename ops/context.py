"""What every `relay` sub-command shares: the settings of this invocation and the exit codes.

Exit codes: 0 success; 1 a check failed (e.g. a drill lost messages); 2 bad usage or configuration;
3 not found; 4 broker unreachable; 5 store unreachable; 6 other transient failure.
"""

from __future__ import annotations

from functools import cache

from shared.logs import configure_logging
from shared.settings import Settings, load_settings

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_BROKER = 4
EXIT_STORE = 5
EXIT_TRANSIENT = 6


@cache
def settings() -> Settings:
    """The settings of this invocation, read once; logging is configured from them."""
    loaded = load_settings()
    configure_logging(level=loaded.log.level, json_output=loaded.log.json_output)
    return loaded
