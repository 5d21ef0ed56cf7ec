"""One lane per endpoint host: at most `concurrency` requests at once, callbacks waiting in memory for a
slot, and a bound on how many broker messages may wait there.

A broker message holds one callback or a bundle of them (`shared.callbacks.wire`). A bundle's callbacks
to one host all wait in its lane, however many: they are in memory already, and putting them back would
cost each a retry tier's wait. What is bounded is how many broker messages (`concurrency + waiting`) a
host holds, since each holds a slot of the worker's prefetch that other hosts' callbacks need; a callback
of one more message is not held but put back for later (`LaneFull`), and so is one that waited longer
than `wait_s` for a slot, so that no message stays unacked for long behind a slow host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field


class LaneFull(Exception):
    """The host has as many messages' callbacks running and waiting as it may, or no slot came in time."""


@dataclass(slots=True)
class _Lane:
    slots: asyncio.Semaphore
    holders: int = 0  # callbacks running and waiting
    running: int = 0
    groups: dict[Hashable, int] = field(default_factory=dict)  # callbacks held, by the message they came in


class Lanes:
    def __init__(self, *, concurrency: int, waiting: int, wait_s: float | None = None) -> None:
        self._concurrency = concurrency
        self._most = concurrency + waiting
        self._wait_s = wait_s
        self._lanes: dict[str, _Lane] = {}

    def held(self, host: str) -> int:
        lane = self._lanes.get(host)
        return lane.holders if lane is not None else 0

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """Each host with callbacks now: (waiting for a slot, in flight)."""
        return {host: (lane.holders - lane.running, lane.running) for host, lane in self._lanes.items()}

    @contextlib.asynccontextmanager
    async def slot(self, host: str, group: Hashable | None = None) -> AsyncIterator[None]:
        """A request slot for `host`, for a callback of the message `group` (None: a message of its own);
        `LaneFull` at once when the lane holds as many other messages as it may, or after `wait_s`."""
        lane = self._lanes.get(host)
        if lane is None:
            lane = self._lanes[host] = _Lane(slots=asyncio.Semaphore(self._concurrency))
        key: Hashable = object() if group is None else group
        if key not in lane.groups and len(lane.groups) >= self._most:
            raise LaneFull(host)
        lane.holders += 1
        lane.groups[key] = lane.groups.get(key, 0) + 1
        try:
            try:
                async with asyncio.timeout(self._wait_s):
                    await lane.slots.acquire()
            except TimeoutError:
                raise LaneFull(host) from None
            lane.running += 1
            try:
                yield
            finally:
                lane.running -= 1
                lane.slots.release()
        finally:
            lane.holders -= 1
            left = lane.groups[key] - 1
            if left:
                lane.groups[key] = left
            else:
                del lane.groups[key]
            if lane.holders == 0:
                del self._lanes[host]
