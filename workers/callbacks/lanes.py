"""One lane per endpoint host: at most `concurrency` requests at once and `waiting` callbacks queued
for a slot. A callback that finds its host's lane full is not held (it would take a slot of the worker's
prefetch that other hosts' callbacks need): it is put back for later."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


class LaneFull(Exception):
    """The host has as many callbacks running and waiting as it may."""


@dataclass(slots=True)
class _Lane:
    slots: asyncio.Semaphore
    holders: int = 0  # running and waiting
    running: int = 0


class Lanes:
    def __init__(self, *, concurrency: int, waiting: int) -> None:
        self._concurrency = concurrency
        self._most = concurrency + waiting
        self._lanes: dict[str, _Lane] = {}

    def held(self, host: str) -> int:
        lane = self._lanes.get(host)
        return lane.holders if lane is not None else 0

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """Each host with callbacks now: (waiting for a slot, in flight)."""
        return {host: (lane.holders - lane.running, lane.running) for host, lane in self._lanes.items()}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """A request slot for `host`; `LaneFull` at once when its lane is full."""
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(slots=asyncio.Semaphore(self._concurrency))
        if lane.holders >= self._most:
            raise LaneFull(host)
        lane.holders += 1
        try:
            async with lane.slots:
                lane.running += 1
                try:
                    yield
                finally:
                    lane.running -= 1
        finally:
            lane.holders -= 1
            if lane.holders == 0:
                del self._lanes[host]
