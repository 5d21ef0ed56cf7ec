"""The launcher's supervisor with real (tiny) child processes: restart on death, clean stop."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil

from ops.supervisor import ChildSpec, Supervisor, run_once

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")
QUITTER = (sys.executable, "-c", "import sys; print('bye'); sys.exit(3)")
# Ignores SIGTERM, so only the SIGKILL after the grace time stops it.
STUBBORN = (
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
    "time.sleep(60)",
)


async def test_a_child_that_dies_is_restarted_after_a_back_off(tmp_path: Path) -> None:
    supervisor = Supervisor(log_dir=tmp_path, grace_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.1)
    await supervisor.start(ChildSpec(name="quitter", args=QUITTER))
    for _ in range(100):
        if supervisor.restarts()["quitter"] >= 2:
            break
        await asyncio.sleep(0.05)
    await supervisor.stop()
    assert supervisor.restarts()["quitter"] >= 2
    log = (tmp_path / "quitter.log").read_text()
    assert log.count("--- start") >= 2
    assert "bye" in log


async def test_stop_ends_every_child_even_one_that_ignores_sigterm(tmp_path: Path) -> None:
    supervisor = Supervisor(log_dir=tmp_path, grace_s=0.5)
    await supervisor.start(ChildSpec(name="sleeper", args=SLEEPER))
    await supervisor.start(ChildSpec(name="stubborn", args=STUBBORN))
    for _ in range(100):  # until the stubborn child has installed its handler
        if "up" in (tmp_path / "stubborn.log").read_text():
            break
        await asyncio.sleep(0.05)
    pids = supervisor.pids()
    assert set(pids) == {"sleeper", "stubborn"}
    await supervisor.stop()
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert supervisor.restarts() == {"sleeper": 0, "stubborn": 0}


async def test_a_stopped_child_is_not_restarted(tmp_path: Path) -> None:
    supervisor = Supervisor(log_dir=tmp_path, grace_s=2.0, backoff_initial_s=0.01)
    await supervisor.start(ChildSpec(name="sleeper", args=SLEEPER))
    await supervisor.stop()
    await asyncio.sleep(0.2)
    assert supervisor.pids() == {}
    assert (tmp_path / "sleeper.log").read_text().count("--- start") == 1


async def test_run_once_returns_the_exit_code_and_output() -> None:
    assert await run_once(QUITTER, timeout_s=30) == (3, "bye\n")
    code, output = await run_once(SLEEPER, timeout_s=0.3)
    assert code == -1 and "timed out" in output
