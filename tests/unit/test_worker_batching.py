from __future__ import annotations

import asyncio

from workers.batching import take_batch


async def test_takes_what_is_queued_up_to_max_batch() -> None:
    intake: asyncio.Queue[int] = asyncio.Queue()
    for i in range(250):
        intake.put_nowait(i)
    first = await take_batch(intake, max_batch=100, linger_s=0)
    second = await take_batch(intake, max_batch=100, linger_s=0)
    third = await take_batch(intake, max_batch=100, linger_s=0)
    assert (first, second, third) == (list(range(100)), list(range(100, 200)), list(range(200, 250)))
    assert intake.empty()


async def test_batch_of_one_never_lingers() -> None:
    intake: asyncio.Queue[int] = asyncio.Queue()
    intake.put_nowait(1)
    intake.put_nowait(2)
    assert await take_batch(intake, max_batch=1, linger_s=10) == [1]
    assert intake.qsize() == 1


async def test_lingers_for_items_arriving_just_after_the_first() -> None:
    intake: asyncio.Queue[int] = asyncio.Queue()

    async def trickle() -> None:
        for i in range(5):
            intake.put_nowait(i)
            await asyncio.sleep(0)

    task = asyncio.create_task(trickle())
    batch = await take_batch(intake, max_batch=100, linger_s=0.02)
    await task
    assert batch == [0, 1, 2, 3, 4]


async def test_waits_for_the_first_item_and_cancel_loses_nothing() -> None:
    intake: asyncio.Queue[int] = asyncio.Queue()
    waiting = asyncio.create_task(take_batch(intake, max_batch=10, linger_s=0.5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    intake.put_nowait(7)
    intake.put_nowait(8)
    await asyncio.sleep(0.01)  # the waiter holds 7, lingers for more
    intake.put_nowait(9)
    waiting.cancel()
    try:
        batch = await waiting
    except asyncio.CancelledError:
        batch = []
    # Cancelled while lingering, it puts back what it took: all three are still queued.
    remaining = [intake.get_nowait() for _ in range(intake.qsize())]
    assert batch == []
    assert sorted(remaining) == [7, 8, 9]
