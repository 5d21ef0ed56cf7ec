"""Helpers for tests: ports, services, and child processes that always get cleaned up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aio_pika
import pytest

from shared.settings import Settings
from shared.topology import topology_from

RELAY = [sys.executable, "-m", "ops.cli"]


def missing_service(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing service is a failure)")
    pytest.skip(reason)


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout_s: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if listening(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@contextlib.contextmanager
def spawned(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own process group, killed (with its children) when the block ends."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        list(args),
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if log is not None and hasattr(out, "close"):
            out.close()


def queues_named_after(prefix: str) -> list[str]:
    """Queues of a local broker whose names start with `prefix.`, as `rabbitmqctl` lists them: a test
    configured with other sites or retry tiers than the defaults declares queues a cleanup by the default
    topology would miss. Empty when rabbitmqctl is not there (a broker elsewhere)."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return []
    listed = subprocess.run(
        [rabbitmqctl, "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60, check=False
    )
    return [name for name in listed.stdout.split() if name.startswith(f"{prefix}.")]


async def delete_broker_names(broker_url: str, settings: Settings) -> None:
    """Deletes the exchanges and queues of `settings`' topology and any other queue under its prefix."""
    topology = topology_from(settings)
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for name in {spec.name for spec in topology.queues()} | set(queues_named_after(topology.prefix)):
            await channel.queue_delete(name)
        for name, _ in topology.exchanges():
            await channel.exchange_delete(name)
