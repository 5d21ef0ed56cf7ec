"""Keeps a set of child processes running: restart on death with a back-off, stop them all cleanly.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only the supervisor, which then
stops the children in order) and, on Linux, asks the kernel to SIGTERM it when the supervisor dies, so a
killed supervisor leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.logs import get_logger

log = get_logger("relay.supervisor")

_PR_SET_PDEATHSIG = 1


def quiet_http_client_logs() -> None:
    """httpx logs every request at INFO; the operator commands poll, which would flood their output."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def relay_command(config_file: Path | None) -> list[str]:
    """The `relay` command as a child process, reading the same configuration file as this one."""
    command = [sys.executable, "-m", "ops.cli"]
    if config_file is not None:
        command += ["--config", str(config_file.resolve())]
    return command


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM this child when the supervisor goes away."""
    if sys.platform != "linux":
        return
    parent_pid = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    name: str  # also the log file's name: <log_dir>/<name>.log
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # set in the child's environment, over the supervisor's own


@dataclass(slots=True, kw_only=True)
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Starts children, restarts any that dies (unless stopping), and stops them all on `stop()`."""

    def __init__(
        self,
        *,
        log_dir: Path,
        grace_s: float,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stable_after_s: float = 30.0,
    ) -> None:
        self._log_dir = log_dir
        self._grace_s = grace_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._children: dict[str, _Child] = {}
        self._stopping = False

    @property
    def log_dir(self) -> Path:
        return self._log_dir

    def pids(self) -> dict[str, int]:
        """Process id of each running child, by name."""
        return {
            name: child.process.pid
            for name, child in self._children.items()
            if child.process is not None and child.process.returncode is None
        }

    def restarts(self) -> dict[str, int]:
        return {name: child.restarts for name, child in self._children.items()}

    async def start(self, spec: ChildSpec) -> None:
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        child = _Child(spec=spec)
        self._children[spec.name] = child
        child.task = asyncio.create_task(self._keep_running(child), name=f"supervise-{spec.name}")
        await child.started.wait()

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        log_path = self._log_dir / f"{child.spec.name}.log"
        with log_path.open("ab") as out:
            out.write(
                f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(child.spec.args)}\n".encode()
            )
            out.flush()
            return await asyncio.create_subprocess_exec(
                *child.spec.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, **dict(child.spec.env)} if child.spec.env else None,
            )

    async def _keep_running(self, child: _Child) -> None:
        backoff_s = self._backoff_initial_s
        while not self._stopping:
            started_at = time.monotonic()
            try:
                child.process = await self._spawn(child)
            except OSError as exc:
                log.error("child_spawn_failed", child=child.spec.name, error=repr(exc))
                child.started.set()
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self._backoff_max_s)
                continue
            log.info("child_started", child=child.spec.name, pid=child.process.pid)
            child.started.set()
            returncode = await child.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started_at >= self._stable_after_s:
                backoff_s = self._backoff_initial_s
            child.restarts += 1
            log.warning(
                "child_died",
                child=child.spec.name,
                pid=child.process.pid,
                returncode=returncode,
                restart_in_s=backoff_s,
                restarts=child.restarts,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self._backoff_max_s)

    async def stop(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after the grace time."""
        self._stopping = True
        running = [c.process for c in self._children.values() if c.process and c.process.returncode is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._grace_s)
            if pending:
                for process in running:
                    if process.returncode is None:
                        log.warning("child_killed_after_grace", pid=process.pid, grace_s=self._grace_s)
                        _signal_group(process.pid, signal.SIGKILL)
                await asyncio.wait(pending, timeout=5.0)
        for child in self._children.values():
            if child.task is not None:
                child.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.task
            if child.process is not None:
                # A child's own children (uvicorn workers) share its group; make sure none outlives it.
                _signal_group(child.process.pid, signal.SIGKILL)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def run_once(args: Sequence[str], *, timeout_s: float) -> tuple[int, str]:
    """Run a command to its end; its exit code and its combined output."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"timed out after {timeout_s} s"
    return process.returncode or 0, output.decode(errors="replace")
