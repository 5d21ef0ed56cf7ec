"""A spooled message its own site's queue keeps refusing is forwarded to another site's queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingress.detours import Detours
from ingress.forwarder import forward_batch
from ingress.spool import Spool, SpoolEntry
from shared.broker import CONFIRMED, Fate, Verdict
from shared.envelope import H_POSSIBLE_DUPLICATE

NACKED = Verdict(Fate.UNKNOWN, "nacked", refused=True)
CONNECTION_LOST = Verdict(Fate.UNKNOWN, "the channel closed before the confirm")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_message_keeps_its_site_until_refused_for_the_whole_wait() -> None:
    clock = Clock()
    detours = Detours(sites=["a", "b"], after_s=30.0, clock=clock)
    assert detours.routing_key("m", "b") == "b"
    detours.settle("m", NACKED)
    clock.now += 29.9
    assert detours.routing_key("m", "b") == "b"
    clock.now += 0.1
    assert detours.routing_key("m", "b") == "a"
    assert detours.routing_key("m", "b.bulk") == "b.bulk", "the next turn goes round to its own site"
    assert detours.routing_key("m", "b.bulk") == "a.bulk"


def test_silence_is_not_a_refusal_and_a_confirm_forgets_the_message() -> None:
    clock = Clock()
    detours = Detours(sites=["a", "b"], after_s=1.0, clock=clock)
    detours.settle("m", CONNECTION_LOST)
    clock.now += 60
    assert detours.routing_key("m", "a") == "a" and detours.pending == 0
    detours.settle("m", NACKED)
    detours.settle("m", CONFIRMED)
    clock.now += 60
    assert detours.routing_key("m", "a") == "a" and detours.pending == 0


def test_three_sites_are_tried_in_turn_from_the_next_one() -> None:
    clock = Clock()
    detours = Detours(sites=["a", "b", "c"], after_s=1.0, clock=clock)
    detours.settle("m", NACKED)
    clock.now += 2
    assert [detours.routing_key("m", "b") for _ in range(4)] == ["c", "a", "b", "c"]


def test_one_site_or_an_unknown_one_has_nowhere_else_to_go() -> None:
    clock = Clock()
    alone = Detours(sites=["a"], after_s=1.0, clock=clock)
    alone.settle("m", NACKED)
    clock.now += 2
    assert alone.routing_key("m", "a") == "a"
    detours = Detours(sites=["a", "b"], after_s=1.0, clock=clock)
    detours.settle("m", NACKED)
    clock.now += 2
    assert detours.routing_key("m", "gone") == "gone"


class RefusingSite:
    """A broker link whose queue of site `refusing` nacks every publish."""

    def __init__(self, refusing: str) -> None:
        self.available = True
        self.refusing = refusing
        self.published: list[tuple[str, str, bool]] = []

    async def publish_job(
        self, *, body: bytes, site: str, message_id: str, headers: dict[str, Any]
    ) -> Verdict:
        self.published.append((message_id, site, bool(headers.get(H_POSSIBLE_DUPLICATE))))
        return NACKED if site == self.refusing else CONFIRMED


async def test_the_forwarder_sends_refused_entries_to_the_other_site_marked(tmp_path: Path) -> None:
    clock = Clock()
    detours = Detours(sites=["a", "b"], after_s=30.0, clock=clock)
    link = RefusingSite("b")
    spool = await Spool(path=tmp_path / "spool.db").open()
    try:
        await spool.append(
            [
                SpoolEntry(message_id=f"m{i}", routing_key=site, headers={}, body=b"{}")
                for i, site in enumerate("ab")
            ]
        )
        assert await forward_batch(spool, link, detours) == (1, 1)  # type: ignore[arg-type]
        clock.now += 10
        assert await forward_batch(spool, link, detours) == (0, 1)  # type: ignore[arg-type]
        clock.now += 20
        assert await forward_batch(spool, link, detours) == (1, 0)  # type: ignore[arg-type]
        assert spool.backlog == 0 and detours.pending == 0
        assert link.published == [
            ("m0", "a", False),
            ("m1", "b", False),
            ("m1", "b", True),  # a nack does not promise no copy is queued: marked from then on
            ("m1", "a", True),
        ]
    finally:
        await spool.close()
