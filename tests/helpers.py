"""Helpers for tests: services that may be missing, and child processes that always get cleaned up."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from subprocess import Popen

import pytest

from ops.harness import processes
from ops.harness.processes import RELAY, free_port, listening, wait_for_port

__all__ = [
    "RELAY",
    "SITES",
    "SITES_ENV",
    "free_port",
    "listening",
    "missing_service",
    "spawned",
    "wait_for_port",
]

# No site is configured by default. Tests that need sites but no platform behind them name these two.
SITES: dict[str, dict[str, str]] = {
    "a": {"url": "http://127.0.0.1:9001/v1.0/message"},
    "b": {"url": "http://127.0.0.1:9002/v1.0/message"},
}
SITES_ENV = {f"RELAY_SITES__{name.upper()}__URL": site["url"] for name, site in SITES.items()}


def missing_service(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing service is a failure)")
    pytest.skip(reason)


@contextlib.contextmanager
def spawned(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[Popen[bytes]]:
    """A child process with this environment plus `env`, killed (with its children) when the block ends."""
    with processes.spawned(args, env={**os.environ, **(env or {})}, log=log, cwd=cwd) as proc:
        yield proc
