"""Gathering jobs that arrive together into one platform request."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")

# How long a request slot waits for more jobs once it holds one: short enough to add nothing a person
# notices, long enough for a burst the broker is still pushing to join the same request.
DEFAULT_LINGER_S = 0.005


def _drain(intake: asyncio.Queue[T], batch: list[T], max_batch: int) -> None:
    while len(batch) < max_batch:
        try:
            batch.append(intake.get_nowait())
        except asyncio.QueueEmpty:
            return


async def take_batch(
    intake: asyncio.Queue[T], *, max_batch: int, linger_s: float = DEFAULT_LINGER_S
) -> list[T]:
    """Wait for one item, then take up to `max_batch` in all, lingering at most `linger_s` for more.

    Lingering is a plain sleep followed by non-blocking takes; a wait cancelled while lingering puts the
    items it took back on the queue, so a cancelled take never swallows one.
    """
    batch = [await intake.get()]
    if max_batch <= 1:
        return batch
    _drain(intake, batch, max_batch)
    if len(batch) < max_batch and linger_s > 0:
        try:
            await asyncio.sleep(linger_s)
        except asyncio.CancelledError:
            # Cancelled while holding items: they go back, so whoever drains the queue finds them.
            for item in batch:
                intake.put_nowait(item)
            raise
        _drain(intake, batch, max_batch)
    return batch
