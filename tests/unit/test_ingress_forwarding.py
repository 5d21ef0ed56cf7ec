"""The spool and its forwarder as a state machine, against a real spool file and a fake broker link.

An entry spooled beside a publish still in flight is held: the publish's verdict removes it (confirmed),
releases it unmarked (never taken) or marked (it may be queued). A forward is awaited however long its
verdict takes, never repeated meanwhile, and a repeated one carries the possible-duplicate header.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingress.detours import Detours
from ingress.forwarder import Forwarder, forward_batch
from ingress.spool import Spool, SpoolEntry
from shared.broker import CONFIRMED, Fate, Verdict
from shared.envelope import H_POSSIBLE_DUPLICATE

UNKNOWN = Verdict(Fate.UNKNOWN, "connection lost")
NOT_TAKEN = Verdict(Fate.NOT_TAKEN, "returned")


class Link:
    """Records each publish; its verdict is `answer`, or, when that is None, whatever the test sets on
    the publish's future."""

    def __init__(self, answer: Verdict | None = CONFIRMED) -> None:
        self.available = True
        self.answer = answer
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.verdicts: list[asyncio.Future[Verdict]] = []

    async def publish_job(
        self, *, body: bytes, site: str, message_id: str, headers: dict[str, Any]
    ) -> Verdict:
        self.published.append((message_id, headers))
        if self.answer is not None:
            return self.answer
        verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.verdicts.append(verdict)
        return await verdict

    def marked(self) -> list[tuple[str, bool]]:
        return [
            (message_id, bool(headers.get(H_POSSIBLE_DUPLICATE))) for message_id, headers in self.published
        ]


def entry(message_id: str, *, maybe_sent: bool = False) -> SpoolEntry:
    return SpoolEntry(message_id=message_id, routing_key="a", headers={}, body=b"{}", maybe_sent=maybe_sent)


@pytest.fixture
async def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    spool = await Spool(path=tmp_path / "spool.db").open()
    yield spool
    await spool.close()


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def settled(spool: Spool) -> None:
    await until(lambda: not spool.held)


async def hold(spool: Spool, message_id: str) -> asyncio.Future[Verdict]:
    """Spool `message_id` as a submit does when it stopped waiting for its bundle's confirm."""
    verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    await spool.append([entry(message_id, maybe_sent=True)], awaiting=[verdict])
    return verdict


async def test_a_late_confirm_removes_the_held_entry_which_is_never_forwarded(spool: Spool) -> None:
    link = Link()
    late = await hold(spool, "m0")
    await spool.append([entry("m1")])
    assert await forward_batch(spool, link) == (0, 0)  # m1 waits behind m0: order of arrival
    assert link.published == [] and spool.backlog == 2
    late.set_result(CONFIRMED)
    await settled(spool)
    assert await forward_batch(spool, link) == (1, 0)
    assert link.marked() == [("m1", False)]
    assert spool.backlog == 0 and await spool.head(10) == []


@pytest.mark.parametrize(("fate", "marked"), [(UNKNOWN, True), (NOT_TAKEN, False)])
async def test_a_publish_that_cannot_be_confirmed_any_more_releases_its_entry(
    spool: Spool, fate: Verdict, marked: bool
) -> None:
    """Nacked or lost: a copy may be queued, so the forward is marked. Returned: no queue has it."""
    link = Link()
    lost = await hold(spool, "m0")
    await spool.append([entry("m1")])
    lost.set_result(fate)
    await settled(spool)
    assert await forward_batch(spool, link) == (2, 0)
    assert link.marked() == [("m0", marked), ("m1", False)]


async def test_an_entry_held_in_the_middle_stops_the_forward_there(spool: Spool) -> None:
    link = Link()
    await spool.append([entry("m0")])
    late = await hold(spool, "m1")
    await spool.append([entry("m2")])
    assert await forward_batch(spool, link) == (1, 0)
    assert link.marked() == [("m0", False)]
    late.set_result(UNKNOWN)
    await settled(spool)
    assert await forward_batch(spool, link) == (2, 0)
    assert link.marked() == [("m0", False), ("m1", True), ("m2", False)]


async def test_a_forward_is_awaited_not_repeated_and_marked_when_its_connection_was_lost(
    spool: Spool, tmp_path: Path
) -> None:
    link = Link(answer=None)
    await spool.append([entry("m0")])
    forwarder = Forwarder(
        spool=spool,
        link=link,  # type: ignore[arg-type]
        spool_base=tmp_path / "spool.db",
        detours=Detours(sites=["a", "b"], after_s=30.0),
    )
    forwarder.start()
    try:
        await until(lambda: link.verdicts)
        await asyncio.sleep(1.5)  # longer than any confirm timeout of the tests: still one publish
        assert link.marked() == [("m0", False)]
        link.verdicts[0].set_result(UNKNOWN)
        await until(lambda: len(link.verdicts) == 2)
        assert link.marked() == [("m0", False), ("m0", True)]
        link.verdicts[1].set_result(CONFIRMED)
        await until(lambda: spool.backlog == 0)
        assert len(link.published) == 2
    finally:
        await forwarder.close()


async def test_a_forward_cut_short_by_a_crash_goes_again_marked(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = await Spool(path=path).open()
    await spool.append([entry("m0"), entry("m1")])
    link = Link(answer=None)
    forwarding = asyncio.create_task(forward_batch(spool, link))
    await until(lambda: len(link.verdicts) == 2)
    forwarding.cancel()  # the process dies with both publishes in flight
    await asyncio.gather(forwarding, return_exceptions=True)
    await spool.close()

    reopened = await Spool(path=path).open()
    try:
        again = Link()
        assert await forward_batch(reopened, again) == (2, 0)
        assert again.marked() == [("m0", True), ("m1", True)]
    finally:
        await reopened.close()


async def test_not_taken_this_time_keeps_the_mark_of_an_earlier_publish(spool: Spool) -> None:
    await spool.append([entry("m0", maybe_sent=True), entry("m1")])
    assert await forward_batch(spool, Link(answer=NOT_TAKEN)) == (0, 2)
    link = Link()
    assert await forward_batch(spool, link) == (2, 0)
    assert link.marked() == [("m0", True), ("m1", False)]


async def test_a_spool_file_from_before_the_mark_opens_and_forwards(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL,"
        " routing_key TEXT NOT NULL, headers BLOB NOT NULL, body BLOB NOT NULL, spooled_at REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO spool (message_id, routing_key, headers, body, spooled_at)"
        " VALUES ('m0', 'a', '{}', x'7b7d', 0)"
    )
    db.commit()
    db.close()
    spool = await Spool(path=path).open()
    try:
        link = Link()
        assert await forward_batch(spool, link) == (1, 0)
        assert link.marked() == [("m0", False)]
    finally:
        await spool.close()


async def test_a_submit_that_stops_waiting_for_the_spool_leaves_its_entry_held(spool: Spool) -> None:
    late: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
    appending = asyncio.create_task(spool.append([entry("m0", maybe_sent=True)], awaiting=[late]))
    await asyncio.sleep(0)
    appending.cancel()
    await asyncio.gather(appending, return_exceptions=True)
    await until(lambda: spool.backlog == 1)
    link = Link()
    assert await forward_batch(spool, link) == (0, 0)
    late.set_result(CONFIRMED)
    await settled(spool)
    assert await forward_batch(spool, link) == (0, 0)
    assert link.published == [] and await spool.head(10) == []
