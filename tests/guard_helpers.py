"""A real `relay ingress` process for the guard tests, and the operator commands beside it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import typer
from typer.testing import CliRunner, Result

from ops import commands, service_commands, tenants_cli
from ops.context import settings
from tests.helpers import RELAY, SITES_ENV, free_port, spawned, wait_for_port


def guard_env(tmp_path: Path, *, broker_url: str, prefix: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "RELAY_BROKER__URL": broker_url,
        "RELAY_BROKER__PREFIX": prefix,
        "RELAY_BROKER__CONFIRM_TIMEOUT_S": "2",
        "RELAY_STORE__URL": f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}",
        "RELAY_INGRESS__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RELAY_INGRESS__PORT": str(port),
        "RELAY_ROUTING__POLICY": "primary",
        "RELAY_LOG__LEVEL": "INFO",
        **SITES_ENV,
        **extra,
    }


async def cli(args: list[str], env: dict[str, str]) -> Result:
    """`relay keys` and `relay tenants` in this process (a child `relay` costs seconds of imports), on
    a thread: the commands run an event loop of their own."""
    return await asyncio.to_thread(_cli, args, env)


def _cli(args: list[str], env: dict[str, str]) -> Result:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    settings.cache_clear()
    app = typer.Typer()
    app.callback()(lambda: None)
    service_commands.register(app)
    commands.register(app)
    tenants_cli.register(app)
    try:
        # Logging set up inside CliRunner would write to its captured stream, closed afterwards.
        with mock.patch("shared.logs.configure_logging", lambda **_: None):
            result = CliRunner().invoke(app, args)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        settings.cache_clear()
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


async def new_key(env: dict[str, str], tenant: str) -> str:
    return (await cli(["keys", "create", "--tenant", tenant], env)).stdout.strip().splitlines()[-1]


@dataclass
class Served:
    url: str
    port: int
    env: dict[str, str]
    log: Path

    def client(self, key: str | None = None, **options: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def served_ingress(
    tmp_path: Path, *, broker_url: str, prefix: str, name: str = "ingress", **extra: str
) -> AsyncIterator[Served]:
    """`relay ingress` as a child process on a free port, its log in `tmp_path`; the store is migrated
    by the `store_url` fixture the test asks for."""
    port = free_port()
    env = guard_env(tmp_path, broker_url=broker_url, prefix=prefix, port=port, **extra)
    log = tmp_path / f"{name}.log"
    with spawned([*RELAY, "ingress"], env=env, log=log):
        await asyncio.to_thread(wait_for_port, port, timeout_s=60)
        yield Served(url=f"http://127.0.0.1:{port}", port=port, env=env, log=log)


async def metric(served: Served, name: str, path: str = "/metrics") -> float:
    """The sum of a metric's samples as the ingress exports them."""
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        text = (await client.get(path)).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
