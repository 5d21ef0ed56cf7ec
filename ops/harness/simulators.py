"""Simulated platforms (`relay platform-sim`): started on this machine, and driven through their admin API.

`SimulatorAdmin` is the one client of that API, whoever switches the faults: `relay drill`, the tests, the
benchmarks. It is synchronous (tests call it between steps); the drill calls it from a thread.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from ops.harness.processes import RELAY, free_port, spawned, wait_for_port
from shared.errors import TransientError

# The HTTP simulator's faults, then the simulated SMSC's own (`none`, `down` and `reject` are both's).
FAULT_MODES = ("none", "down", "blackhole", "error", "slow", "reject", "flaky")
SMSC_FAULT_MODES = ("none", "down", "bind-refused", "no-resp", "throttle", "queue-full", "reject", "unbind")
ADMIN_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
SIMULATOR_COMMAND: tuple[str, ...] = (*RELAY, "platform-sim")
SMSC_COMMAND: tuple[str, ...] = (*RELAY, "smsc-sim")  # same ports and admin API, SMPP on the platform port


class SimulatorUnavailable(TransientError):
    """A simulator's admin API did not answer as the simulator does."""


@cache
def _shared_client() -> httpx.Client:
    # One client for every admin in a process: making an httpx client costs tens of milliseconds (its TLS
    # context), far more than a request to a simulator on this machine. httpx clients are thread-safe.
    return httpx.Client(timeout=ADMIN_TIMEOUT_S)


class SimulatorAdmin:
    """Client of one simulated platform's admin API: faults, counters, references received."""

    def __init__(self, *, admin_url: str, site: str = "", client: httpx.Client | None = None) -> None:
        self.site = site
        self.admin_url = admin_url.rstrip("/")
        self._client = client

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        """One admin request's JSON answer; `SimulatorUnavailable` if it fails or is not JSON."""
        client = self._client or _shared_client()
        try:
            response = client.request(method, f"{self.admin_url}{path}", json=payload)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SimulatorUnavailable(
                f"site {self.site}: {method} {self.admin_url}{path} failed: {exc!r}"
            ) from None

    def stats(self) -> dict[str, int]:
        """The simulator's counters (`received`, `unique`, `duplicates`, ...)."""
        answer = self.admin("GET", "/stats")
        if not isinstance(answer, dict) or not all(
            isinstance(answer.get(key), int) for key in ("received", "unique", "duplicates")
        ):
            raise SimulatorUnavailable(
                f"site {self.site}: {self.admin_url}/stats does not answer like the simulator: {answer!r}"
            )
        return answer

    def references(self) -> list[str]:
        """Every reference received, once each, in order of first receipt."""
        return self.references_since(0)[0]

    def references_since(self, since: int) -> tuple[list[str], int]:
        """References first received after the first `since`, and how many there are in all."""
        answer = self.admin("GET", f"/references?since={since}")
        refs = answer.get("references") if isinstance(answer, dict) else None
        if not isinstance(refs, list):
            raise SimulatorUnavailable(f"site {self.site}: /references answered {answer!r}")
        total = answer.get("total")
        if not isinstance(total, int):  # a simulator that ignores `since` answers the whole list
            return [str(r) for r in refs[since:]], len(refs)
        return [str(r) for r in refs], total

    def set_fault(self, mode: str, **options: float) -> dict[str, Any]:
        """Switch the platform's fault (`none` heals it); the simulator's answer names the fault now on (a
        simulator refuses a mode of the other kind's)."""
        if mode not in FAULT_MODES and mode not in SMSC_FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        answer: dict[str, Any] = self.admin("POST", "/faults", {"mode": mode, **options})
        return answer

    def reset(self) -> None:
        """No fault, counters and references at zero."""
        self.set_fault("none")
        self.admin("POST", "/reset")


def simulator_args(command: Sequence[str], *, host: str, port: int, admin_port: int) -> list[str]:
    return [*command, "--host", host, "--port", str(port), "--admin-port", str(admin_port)]


class LocalSimulator(SimulatorAdmin):
    """A simulator this harness started on 127.0.0.1."""

    def __init__(
        self, *, site: str, port: int, admin_port: int, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        super().__init__(site=site, admin_url=f"http://127.0.0.1:{admin_port}")
        self.port = port
        self.admin_port = admin_port
        self.process = process

    @property
    def url(self) -> str:
        """The platform's submit endpoint (http-json)."""
        return f"http://127.0.0.1:{self.port}/v1.0/message"


@contextlib.contextmanager
def running_simulators(
    sites: Iterable[str],
    *,
    log_dir: Path | None = None,
    command: Sequence[str] = SIMULATOR_COMMAND,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[dict[str, LocalSimulator]]:
    """One simulator per site on free ports (logs: `<log_dir>/sim-<site>.log`), started together and
    stopped when the block ends."""
    with contextlib.ExitStack() as stack:
        sims = {}
        for site in sites:
            log = log_dir / f"sim-{site}.log" if log_dir is not None else None
            sims[site] = _start(stack, site, log=log, command=command, extra_args=extra_args, env=env)
        for sim in sims.values():
            _wait_started(sim)
        yield sims


@contextlib.contextmanager
def running_simulator(
    site: str = "",
    *,
    log: Path | None = None,
    command: Sequence[str] = SIMULATOR_COMMAND,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[LocalSimulator]:
    """One simulator on free ports, stopped when the block ends."""
    with contextlib.ExitStack() as stack:
        sim = _start(stack, site, log=log, command=command, extra_args=extra_args, env=env)
        _wait_started(sim)
        yield sim


def _start(
    stack: contextlib.ExitStack,
    site: str,
    *,
    log: Path | None,
    command: Sequence[str],
    extra_args: Sequence[str],
    env: Mapping[str, str] | None,
) -> LocalSimulator:
    port, admin_port = free_port(), free_port()
    args = [*simulator_args(command, host="127.0.0.1", port=port, admin_port=admin_port), *extra_args]
    process = stack.enter_context(spawned(args, env=env, log=log))
    return LocalSimulator(site=site, port=port, admin_port=admin_port, process=process)


def _wait_started(sim: LocalSimulator) -> None:
    try:
        wait_for_port(sim.admin_port, timeout_s=START_TIMEOUT_S)
        wait_for_port(sim.port, timeout_s=START_TIMEOUT_S)
    except TimeoutError:
        code = sim.process.poll() if sim.process is not None else None
        raise RuntimeError(f"the simulator of site {sim.site!r} did not start (exit code {code})") from None
