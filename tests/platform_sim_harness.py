"""Runs the simulated platform as a real child process and drives its admin API (`ops.harness.simulators`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from ops.harness.simulators import LocalSimulator, running_simulator

# The simulator's own entry point: the same code `relay platform-sim` runs, without the other commands.
SIM_COMMAND: Sequence[str] = (sys.executable, "-m", "simulator")

RunningSim = LocalSimulator


def running_sim(
    *, log: Path | None = None, extra_args: Sequence[str] = (), command: Sequence[str] = SIM_COMMAND
) -> AbstractContextManager[LocalSimulator]:
    """A simulator on free ports with quiet logs, killed when the block ends."""
    env = {**os.environ, "RELAY_LOG__LEVEL": "WARNING"}
    return running_simulator(log=log, command=command, extra_args=extra_args, env=env)
