"""The simulated platforms as the drill sees them: their admin API and the receipts of drill messages.

Receipt times come from polling each simulator's GET /references?since=N (unique references in order
of first receipt, after the first N) every `poll_interval_s` (100 ms by default) and stamping the
references that are new since the last poll: a receipt time is late by at most one poll interval plus
the poll's own duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.errors import TransientError

FAULT_MODES = ("none", "down", "blackhole", "error", "slow", "reject", "flaky")
ADMIN_TIMEOUT_S = 5.0


class SimulatorUnavailable(TransientError):
    """A simulator's admin API did not answer as the simulator does."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimStats:
    received: int
    unique: int
    duplicates: int


class SimulatorAdmin:
    """Client of one simulated platform's admin API."""

    def __init__(self, *, client: httpx.AsyncClient, site: str, admin_url: str) -> None:
        self._client = client
        self.site = site
        self.admin_url = admin_url.rstrip("/")

    async def _get(self, path: str) -> Any:
        try:
            response = await self._client.get(f"{self.admin_url}{path}", timeout=ADMIN_TIMEOUT_S)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SimulatorUnavailable(
                f"site {self.site}: GET {self.admin_url}{path} failed: {exc!r}"
            ) from None

    async def stats(self) -> SimStats:
        answer = await self._get("/stats")
        try:
            values = {key: answer[key] for key in ("received", "unique", "duplicates")}
        except (KeyError, TypeError):
            raise SimulatorUnavailable(
                f"site {self.site}: {self.admin_url}/stats does not answer like the simulator: {answer!r}"
            ) from None
        if not all(isinstance(v, int) for v in values.values()):
            raise SimulatorUnavailable(f"site {self.site}: /stats answered non-integers: {answer!r}")
        return SimStats(**values)

    async def references(self, since: int = 0) -> tuple[list[str], int]:
        """References first received after the first `since`, and how many there are in all."""
        answer = await self._get(f"/references?since={since}")
        refs = answer.get("references") if isinstance(answer, dict) else None
        if not isinstance(refs, list):
            raise SimulatorUnavailable(f"site {self.site}: /references answered {answer!r}")
        total = answer.get("total")
        if not isinstance(total, int):  # a simulator that ignores `since` answers the whole list
            return [str(r) for r in refs[since:]], len(refs)
        return [str(r) for r in refs], total

    async def set_fault(self, mode: str) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        try:
            response = await self._client.post(
                f"{self.admin_url}/faults", json={"mode": mode}, timeout=ADMIN_TIMEOUT_S
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise SimulatorUnavailable(f"site {self.site}: setting fault {mode!r} failed: {exc!r}") from None

    async def fault(self) -> str:
        answer = await self._get("/faults")
        return str(answer.get("mode", "")) if isinstance(answer, dict) else ""


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
            _, self._receipts[sim.site].seen_count = await sim.references()

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
                new, total = await sim.references(since=state.seen_count)
                if total < state.seen_count:  # someone reset the simulator: its list starts again
                    new, total = await sim.references(since=0)
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
