"""The drill's receipt tracker and the simulator admin client against a fake admin API (httpx mock
transport)."""

from __future__ import annotations

import httpx
import pytest

from ops.drill_sims import ReceiptTracker, probe_simulators
from ops.harness.simulators import SimulatorAdmin, SimulatorUnavailable


class FakeSimulator:
    """Answers /references?since=N and /stats like the simulator does."""

    def __init__(self, *, with_total: bool = True) -> None:
        self.order: list[str] = []
        self.with_total = with_total

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/references":
            since = int(request.url.params.get("since", "0"))
            if not self.with_total:
                return httpx.Response(200, json={"references": self.order})
            return httpx.Response(200, json={"references": self.order[since:], "total": len(self.order)})
        if request.url.path == "/stats":
            n = len(self.order)
            return httpx.Response(200, json={"received": n, "unique": n, "duplicates": 0})
        return httpx.Response(404)


def admin(sim: FakeSimulator, site: str) -> SimulatorAdmin:
    client = httpx.Client(transport=httpx.MockTransport(sim.handle))
    return SimulatorAdmin(client=client, site=site, admin_url=f"http://sim-{site}")


@pytest.mark.parametrize("with_total", [True, False])
async def test_only_drill_ids_received_after_the_baseline_count(with_total: bool) -> None:
    sim_a, sim_b = FakeSimulator(with_total=with_total), FakeSimulator(with_total=with_total)
    sim_a.order = ["old-1", "old-2"]
    tracker = ReceiptTracker(sims=[admin(sim_a, "a"), admin(sim_b, "b")])
    await tracker.baseline()
    sim_a.order += ["m1", "other"]
    sim_b.order += ["m2"]
    await tracker.poll_once()
    sim_a.order += ["m3"]
    sim_b.order += ["m1"]
    await tracker.poll_once()
    tracker.track(["m1", "m2", "m3", "old-1"])
    receipts = tracker.receipts()
    assert set(receipts["a"]) == {"m1", "m3"}
    assert set(receipts["b"]) == {"m2", "m1"}
    assert receipts["a"]["m1"] <= receipts["a"]["m3"]
    assert tracker.received_ids() == {"m1", "m2", "m3"}


async def test_a_reset_simulator_is_read_again_from_the_start() -> None:
    sim = FakeSimulator()
    sim.order = ["x1", "x2", "x3"]
    tracker = ReceiptTracker(sims=[admin(sim, "a")])
    await tracker.baseline()
    sim.order = ["m1"]  # someone reset it, then m1 arrived
    await tracker.poll_once()
    tracker.track(["m1"])
    assert tracker.received_ids() == {"m1"}


def test_a_platform_that_is_not_the_simulator_is_refused() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"ok": True})))
    with pytest.raises(SimulatorUnavailable, match="does not answer like the simulator"):
        SimulatorAdmin(client=client, site="a", admin_url="http://real-platform").stats()


def test_the_whole_reference_list_is_read_from_a_simulator_that_ignores_since() -> None:
    sim = FakeSimulator(with_total=False)
    sim.order = ["r1", "r2", "r3"]
    assert admin(sim, "a").references_since(2) == (["r3"], 3)
    assert admin(sim, "a").references() == ["r1", "r2", "r3"]


async def test_sites_without_a_named_simulator_are_reported_not_probed() -> None:
    # Nothing answers on port 9 (discard): the named simulator of site a is unavailable too.
    sims, problems = await probe_simulators(["a", "b"], {"a": "http://127.0.0.1:9"})
    assert sims == {}
    assert problems[0].startswith("site a: GET http://127.0.0.1:9/stats failed")
    assert problems[1].startswith("site b has no simulator (none named by --simulator")
