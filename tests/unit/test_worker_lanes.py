"""A worker sends the jobs of its normal lane before those of tenants with a backlog (bulk queues)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from workers.batching import take_batch
from workers.lanes import LaneQueue


def held(routing_key: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(
        carrier=SimpleNamespace(message=SimpleNamespace(routing_key=routing_key)), name=name
    )


async def test_normal_jobs_leave_before_bulk_ones_each_lane_in_arrival_order() -> None:
    lanes: LaneQueue = LaneQueue()
    for n in range(3):
        lanes.put_nowait(held("a.bulk", f"bulk{n}"))  # type: ignore[arg-type]
    lanes.put_nowait(held("a", "quiet"))  # type: ignore[arg-type]
    lanes.put_nowait(held("b", "retried"))  # type: ignore[arg-type]
    assert (lanes.qsize(), lanes.empty()) == (5, False)
    batch = await take_batch(lanes, max_batch=3, linger_s=0)  # type: ignore[arg-type]
    assert [h.name for h in batch] == ["quiet", "retried", "bulk0"]
    assert [(await lanes.get()).name for _ in range(2)] == ["bulk1", "bulk2"]  # type: ignore[attr-defined]
    assert lanes.empty()
    waiting = asyncio.ensure_future(lanes.get())
    await asyncio.sleep(0)
    lanes.put_nowait(held("a.bulk", "late"))  # type: ignore[arg-type]
    assert (await waiting).name == "late"  # type: ignore[attr-defined]
