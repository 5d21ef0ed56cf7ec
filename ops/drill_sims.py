"""The simulated platforms as the drill sees them: which sites have one, and the receipts of drill messages.

Receipt times come from polling each simulator's GET /references?since=N (unique references in order
of first receipt, after the first N) every `poll_interval_s` (100 ms by default) and stamping the
references that are new since the last poll: a receipt time is late by at most one poll interval plus
the poll's own duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from ops.harness.simulators import SimulatorAdmin, SimulatorUnavailable

NO_SIMULATOR = "none named by --simulator or by the run file of `relay up`"


async def probe_simulators(
    sites: Iterable[str], admin_urls: Mapping[str, str]
) -> tuple[dict[str, SimulatorAdmin], list[str]]:
    """The sites whose platform answers like the simulator, and why each other site does not."""
    sims: dict[str, SimulatorAdmin] = {}
    problems: list[str] = []
    for site in sites:
        admin_url = admin_urls.get(site)
        if admin_url is None:
            problems.append(f"site {site} has no simulator ({NO_SIMULATOR}): its platform may be real")
            continue
        sim = SimulatorAdmin(site=site, admin_url=admin_url)
        try:
            await asyncio.to_thread(sim.stats)
        except SimulatorUnavailable as exc:
            problems.append(str(exc))
            continue
        sims[site] = sim
    return sims, problems


@dataclass(slots=True, kw_only=True)
class _SiteReceipts:
    seen_count: int = 0  # how much of /references was processed; the list only grows until a reset
    first_seen: dict[str, float] = field(default_factory=dict)  # drill id -> first poll that saw it


class ReceiptTracker:
    """Polls every simulator's /references and stamps the first time each drill id shows up there.

    Only ids the drill submitted count (`track()`), so other traffic on the same simulators and
    references from before the drill are ignored; nothing is reset.
    """

    def __init__(self, *, sims: list[SimulatorAdmin], poll_interval_s: float = 0.1) -> None:
        self._sims = sims
        self._poll_interval_s = poll_interval_s
        self._receipts = {sim.site: _SiteReceipts() for sim in sims}
        self._tracked: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.poll_errors = 0
        self.last_change_at = time.time()

    async def baseline(self) -> None:
        """Skip what the simulators received before the drill."""
        for sim in self._sims:
            _, self._receipts[sim.site].seen_count = await asyncio.to_thread(sim.references_since, 0)

    def track(self, ids: Collection[str]) -> None:
        """Count these ids as the drill's; a receipt seen before its submit's answer keeps its time."""
        self._tracked |= set(ids)

    def receipts(self) -> dict[str, dict[str, float]]:
        """Per site: drill id -> first time seen there (tracked ids only)."""
        return {
            site: {m: t for m, t in r.first_seen.items() if m in self._tracked}
            for site, r in self._receipts.items()
        }

    def received_ids(self) -> set[str]:
        return {m for r in self._receipts.values() for m in r.first_seen if m in self._tracked}

    async def poll_once(self) -> None:
        now = time.time()
        for sim in self._sims:
            state = self._receipts[sim.site]
            try:
                new, total = await asyncio.to_thread(sim.references_since, state.seen_count)
                if total < state.seen_count:  # someone reset the simulator: its list starts again
                    new, total = await asyncio.to_thread(sim.references_since, 0)
            except SimulatorUnavailable:
                self.poll_errors += 1
                continue
            state.seen_count = total
            for ref in new:
                if ref not in state.first_seen:
                    state.first_seen[ref] = now
            if new:
                self.last_change_at = now

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            await self.poll_once()
            await asyncio.sleep(max(0.0, self._poll_interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="receipt-tracker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.poll_once()
