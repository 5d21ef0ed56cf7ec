"""Runs the simulated SMSC as a real child process and drives its admin API."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ops.harness.processes import free_port, spawned, wait_for_port

SMSC_COMMAND: Sequence[str] = (sys.executable, "-m", "simulator.smsc")


@dataclass
class RunningSmsc:
    port: int
    admin_port: int
    process: subprocess.Popen[bytes]

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        response = httpx.request(method, self.admin_url + path, json=payload, timeout=5.0)
        response.raise_for_status()
        return response.json()

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.admin("POST", "/faults", {"mode": mode, **options})
        return answer

    def stats(self) -> dict[str, int]:
        answer: dict[str, int] = self.admin("GET", "/stats")
        return answer

    def messages(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.admin("GET", "/messages")["messages"]
        return answer

    def wait_for_messages(self, count: int, *, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The messages taken once there are at least `count` (or all there are after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self.messages()
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)


@contextlib.contextmanager
def running_smsc(*, log: Path | None = None, extra_args: Sequence[str] = ()) -> Iterator[RunningSmsc]:
    """A simulated SMSC on free ports, killed when the block ends."""
    port, admin_port = free_port(), free_port()
    args = [*SMSC_COMMAND, "--port", str(port), "--admin-port", str(admin_port), *extra_args]
    with spawned(args, log=log, env={**os.environ, "RELAY_LOG__LEVEL": "WARNING"}) as proc:
        try:
            wait_for_port(admin_port, timeout_s=15)
            wait_for_port(port, timeout_s=5)
        except TimeoutError:
            raise RuntimeError(f"SMSC simulator did not start (exit code {proc.poll()})") from None
        yield RunningSmsc(port=port, admin_port=admin_port, process=proc)
