"""The fault a drill switches at one site: a simulated platform's fault mode, the site's workers killed, or
the broker node that leads the site's queue killed (`ops.drill_broker_node`).

The first two go through the one harness: `SimulatorAdmin.set_fault` for the platform, the workers'
heartbeats for which processes serve the site.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from ops.drill_heartbeats import HeartbeatWatcher
from ops.drill_plan import DrillRefused
from ops.harness.simulators import SimulatorAdmin, SimulatorUnavailable
from shared.settings import PlatformKind, Settings

KILL_WORKER = "kill-worker"
RESTART_TIMEOUT_S = 60.0
# The drill's faults as the simulated SMSC of an smpp site has them: the port closed, submits never
# answered, binds refused (nothing taken, as the HTTP simulator's 500s).
SMSC_FAULTS = {"down": "down", "blackhole": "no-resp", "error": "bind-refused"}


def simulator_fault(fault: str, platform: PlatformKind | None) -> str:
    """The fault mode of the site's simulator that stands for the drill's `fault`."""
    return SMSC_FAULTS.get(fault, fault) if platform is PlatformKind.SMPP else fault


class Fault(Protocol):
    """What a drill does with its fault: refuse early what it cannot do, inject, clear, and heal."""

    async def check_possible(self) -> None: ...

    async def inject(self) -> float: ...

    async def clear(self) -> float: ...

    async def heal(self) -> None: ...


class FaultSwitch:
    """Injects `fault` at `site` and clears it; `clear()` returns once the site works again (or a bound)."""

    def __init__(
        self,
        *,
        fault: str,
        site: str,
        config: Settings,
        sims: Mapping[str, SimulatorAdmin],
        watcher: HeartbeatWatcher,
        say: Callable[[str], None],
    ) -> None:
        self._fault = fault
        self._site = site
        self._config = config
        self._sim = sims.get(site)
        site_settings = config.sites.get(site)
        self._mode = simulator_fault(fault, site_settings.platform if site_settings is not None else None)
        self._watcher = watcher
        self._say = say
        self._killed: frozenset[int] = frozenset()
        self._on = False

    @property
    def _beat_age_s(self) -> float:
        return 3 * self._config.worker.heartbeat_interval_s

    async def check_possible(self) -> None:
        """Refuse now what `inject()` could not do: no simulator to fault, no local worker to kill."""
        if self._fault != KILL_WORKER:
            if self._sim is None:
                raise DrillRefused(
                    f"fault {self._fault!r} needs the simulated platform of site {self._site!r}"
                )
            return
        try:
            await self._watcher.wait_for(self._site, timeout_s=self._beat_age_s + 2)
        except TimeoutError:
            raise DrillRefused(f"no worker of site {self._site!r} on this host sends heartbeats") from None

    async def inject(self) -> float:
        """Switch the fault on; when it began."""
        if self._sim is not None and self._fault != KILL_WORKER:
            await asyncio.to_thread(self._sim.set_fault, self._mode)
            self._on = True
            self._say(f"fault {self._fault!r} injected at site {self._site}")
            return time.time()
        self._killed = frozenset(self._watcher.kill_site(self._site, max_age_s=self._beat_age_s + 1))
        if not self._killed:
            raise DrillRefused(f"found no live worker process of site {self._site!r} to kill")
        self._say(f"killed the workers of site {self._site}: pids {sorted(self._killed)}")
        return time.time()

    async def clear(self) -> float:
        """Switch the fault off and wait until the site consumes again; when it was cleared (for a kill:
        when a new worker of the site appeared)."""
        if self._sim is None or self._fault == KILL_WORKER:
            return await self._worker_back()
        await asyncio.to_thread(self._sim.set_fault, "none")
        self._on = False
        cleared_at = time.time()
        self._say(f"fault cleared at site {self._site}")
        # Requests sent into a black hole fail only at their timeout, after the clear: a heartbeat before
        # then can still show the breaker closed, about to open. Only one sent once those have failed says
        # the site really consumes again.
        settled_at = (
            cleared_at + self._config.sites[self._site].timeout_s + self._config.worker.heartbeat_interval_s
        )
        try:
            await self._watcher.wait_for_consuming(
                self._site, since=settled_at, timeout_s=self.recovery_wait_s()
            )
            self._say(f"site {self._site} consumes again")
        except TimeoutError:
            self._say(
                f"site {self._site} did not report a closed breaker within {self.recovery_wait_s():g} s"
            )
        return cleared_at

    async def heal(self) -> None:
        """Leave no platform fault on, whatever stopped the drill."""
        if self._on and self._sim is not None:
            with contextlib.suppress(SimulatorUnavailable):
                await asyncio.to_thread(self._sim.set_fault, "none")
            self._on = False

    async def _worker_back(self) -> float:
        try:
            beat = await self._watcher.wait_for(
                self._site, timeout_s=RESTART_TIMEOUT_S, excluding_pids=self._killed
            )
        except TimeoutError:
            self._say(f"no worker of site {self._site} came back within {RESTART_TIMEOUT_S:g} s")
            return time.time()
        self._say(f"site {self._site} has a worker again: pid {beat.pid}")
        return self._watcher.first_seen.get(beat.worker, time.time())

    def recovery_wait_s(self) -> float:
        # The breaker's cool-down doubles with each failed probe (up to 8x), and a heartbeat has to follow.
        worker = self._config.worker
        longest_timeout_s = max((site.timeout_s for site in self._config.sites.values()), default=0.0)
        return longest_timeout_s + 8 * worker.breaker_cooldown_s + 3 * worker.heartbeat_interval_s + 5
