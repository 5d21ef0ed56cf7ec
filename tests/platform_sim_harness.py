"""Runs the simulated platform as a real child process and drives its admin API."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import free_port, spawned, wait_for_port

# The simulator's own entry point: the same code `relay platform-sim` runs, without the other commands.
SIM_COMMAND: Sequence[str] = (sys.executable, "-m", "simulator")


@dataclass
class RunningSim:
    port: int
    admin_port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1.0/message"

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

    def references(self) -> list[str]:
        answer: list[str] = self.admin("GET", "/references")["references"]
        return answer

    def reset(self) -> None:
        self.set_fault("none")
        self.admin("POST", "/reset")


@contextlib.contextmanager
def running_sim(
    *, log: Path | None = None, extra_args: Sequence[str] = (), command: Sequence[str] = SIM_COMMAND
) -> Iterator[RunningSim]:
    """A simulator on free ports, killed when the block ends."""
    port, admin_port = free_port(), free_port()
    args = [*command, "--port", str(port), "--admin-port", str(admin_port), *extra_args]
    with spawned(args, log=log, env={"RELAY_LOG__LEVEL": "WARNING"}) as proc:
        try:
            wait_for_port(admin_port, timeout_s=15)
            wait_for_port(port, timeout_s=5)
        except TimeoutError:
            raise RuntimeError(f"platform simulator did not start (exit code {proc.poll()})") from None
        yield RunningSim(port=port, admin_port=admin_port, process=proc)
