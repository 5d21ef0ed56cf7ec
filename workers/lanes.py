"""The order in which a worker sends the jobs it holds: the other tenants' jobs before those of the
tenants with a backlog (the ones the ingress sent to a site's bulk queue), each lane in arrival order.

The broker hands a worker messages from both its queues; without this a single message of a quiet
tenant would wait in the worker behind every bulk job it already held (up to its prefetch times a
bundle's jobs).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator

from workers.settlement import Held

BULK_SUFFIX = ".bulk"


def is_bulk(held: Held) -> bool:
    return (held.carrier.message.routing_key or "").endswith(BULK_SUFFIX)


class _Lanes:
    """The two lanes behind one asyncio queue, shaped as the deque asyncio.Queue keeps its items in."""

    def __init__(self) -> None:
        self.normal: deque[Held] = deque()
        self.bulk: deque[Held] = deque()

    def __len__(self) -> int:
        return len(self.normal) + len(self.bulk)

    def __iter__(self) -> Iterator[Held]:
        return itertools.chain(self.normal, self.bulk)

    def append(self, item: Held) -> None:
        (self.bulk if is_bulk(item) else self.normal).append(item)

    def popleft(self) -> Held:
        return self.normal.popleft() if self.normal else self.bulk.popleft()


class LaneQueue(asyncio.Queue[Held]):
    """An asyncio queue that gives its normal lane before its bulk one (as `asyncio.PriorityQueue`
    reorders its items, by replacing the container the queue keeps them in)."""

    def _init(self, maxsize: int) -> None:
        self._queue = _Lanes()
