"""Ports and child processes of a harness: each child in its own process group, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ops.supervisor import relay_command

RELAY: list[str] = relay_command(None)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice, so parallel runs do not collide)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_run(count: int, *, tries: int = 50) -> int:
    """The first of `count` ports in a row that are all free now (for `relay up --metrics-base-port`)."""
    for _ in range(tries):
        first = free_port()
        if first + count <= 65535 and all(_bindable(first + n) for n in range(1, count)):
            return first
    raise RuntimeError(f"found no {count} free ports in a row")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


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
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
    stop_timeout_s: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own process group (`env`: its whole environment, else this one's); at the
    end SIGTERM to the group, SIGKILL after `stop_timeout_s`, so none of its own children outlives it."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("ab")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            list(args),
            env=None if env is None else dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop(proc, timeout_s=stop_timeout_s)


def stop(proc: subprocess.Popen[bytes], *, timeout_s: float) -> None:
    """SIGTERM a child's process group, then SIGKILL it if the child is not gone after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sigkill(proc)


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


class PeerMissing(RuntimeError):
    """A program or service a harness needs is not on this machine (the test suite skips, or fails in CI)."""
