"""The http-json adapter against the real simulated platform, in every fault mode."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.model import Job, Outcome
from tests.platform_sim_harness import RunningSim, running_sim
from workers.platforms.http_json import HttpJsonPlatform

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    log: Path = tmp_path_factory.mktemp("sim") / "sim.log"
    with running_sim(log=log) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: RunningSim) -> RunningSim:
    module_sim.reset()
    return module_sim


@pytest.fixture
async def adapter(sim: RunningSim) -> AsyncIterator[HttpJsonPlatform]:
    platform = HttpJsonPlatform(url=sim.url, token="tok", timeout_s=0.5, batch_size=100, concurrency=8)
    yield platform
    await platform.aclose()


def jobs(count: int, *, tag: str = "m") -> list[Job]:
    expires_at = time.time() + 600
    return [
        Job(
            id=f"{tag}{n:04d}", tenant="t", to="+31612345678", sender="Bank", body="hi", expires_at=expires_at
        )
        for n in range(count)
    ]


async def test_batch_of_100_is_accepted_and_counted_in_order(
    sim: RunningSim, adapter: HttpJsonPlatform
) -> None:
    batch = jobs(100)
    results = await adapter.send(batch)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 100
    assert sim.stats()["received"] == 100
    assert sim.references() == [j.id for j in batch]


async def test_sending_again_counts_duplicates(sim: RunningSim, adapter: HttpJsonPlatform) -> None:
    batch = jobs(30)
    await adapter.send(batch)
    await adapter.send(batch[:10])
    stats = sim.stats()
    assert (stats["received"], stats["unique"], stats["duplicates"]) == (40, 30, 10)


async def test_invalid_number_is_rejected_by_the_platform(sim: RunningSim, adapter: HttpJsonPlatform) -> None:
    (good,) = jobs(1)
    results = await adapter.send(
        [good, Job(id="bad1", tenant="t", to="12", sender="S", body="x", expires_at=0)]
    )
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED]
    assert "invalid recipient" in results[1].detail


async def test_down_refuses_even_kept_alive_connections_then_recovers(
    sim: RunningSim, adapter: HttpJsonPlatform
) -> None:
    assert (await adapter.send(jobs(1, tag="warm")))[0].outcome is Outcome.ACCEPTED  # a kept-alive connection
    sim.set_fault("down")
    started = time.monotonic()
    results = await adapter.send(jobs(5, tag="down"))
    assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 5
    assert time.monotonic() - started < 0.5  # refused at once, no timeout waited
    sim.set_fault("none")
    assert [r.outcome for r in await adapter.send(jobs(5, tag="up"))] == [Outcome.ACCEPTED] * 5
    assert sim.stats()["received"] == 6


async def test_blackhole_is_ambiguous_after_the_timeout(sim: RunningSim, adapter: HttpJsonPlatform) -> None:
    sim.set_fault("blackhole")
    started = time.monotonic()
    results = await adapter.send(jobs(3))
    elapsed_s = time.monotonic() - started
    assert [r.outcome for r in results] == [Outcome.AMBIGUOUS] * 3
    assert 0.4 <= elapsed_s < 2.0
    assert sim.stats()["received"] == 0


async def test_error_is_unavailable_and_takes_nothing(sim: RunningSim, adapter: HttpJsonPlatform) -> None:
    sim.set_fault("error")
    results = await adapter.send(jobs(4))
    assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 4
    assert "500" in results[0].detail
    assert sim.stats()["received"] == 0


async def test_slow_within_the_timeout_is_accepted(sim: RunningSim) -> None:
    sim.set_fault("slow", latency_ms=200)
    patient = HttpJsonPlatform(url=sim.url, token="tok", timeout_s=3.0, batch_size=10)
    started = time.monotonic()
    try:
        results = await patient.send(jobs(2))
    finally:
        await patient.aclose()
    assert time.monotonic() - started >= 0.2
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 2


async def test_slow_beyond_the_timeout_is_ambiguous_and_a_retry_duplicates(
    sim: RunningSim, adapter: HttpJsonPlatform
) -> None:
    sim.set_fault("slow", latency_ms=1500)
    batch = jobs(3)
    assert [r.outcome for r in await adapter.send(batch)] == [Outcome.AMBIGUOUS] * 3
    sim.set_fault("none")
    assert [r.outcome for r in await adapter.send(batch)] == [Outcome.ACCEPTED] * 3
    stats = sim.stats()
    assert (stats["received"], stats["unique"], stats["duplicates"]) == (6, 3, 3)


async def test_reject_share_rejects_for_good_and_counts(sim: RunningSim, adapter: HttpJsonPlatform) -> None:
    sim.set_fault("reject", share=0.5)
    batch = jobs(100)
    first = [r.outcome for r in await adapter.send(batch)]
    second = [r.outcome for r in await adapter.send(batch)]
    rejected = first.count(Outcome.REJECTED)
    assert 20 <= rejected <= 80
    assert first.count(Outcome.ACCEPTED) == 100 - rejected
    assert second == first  # a permanent answer stays the same on retry
    assert sim.stats()["received"] == 200


async def test_flaky_requests_are_unavailable_and_not_counted(
    sim: RunningSim, adapter: HttpJsonPlatform
) -> None:
    sim.set_fault("flaky", share=1.0)
    results = await adapter.send(jobs(3))
    assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 3
    assert "503" in results[0].detail
    assert sim.stats()["received"] == 0


async def test_flaky_share_fails_some_requests_only(sim: RunningSim) -> None:
    sim.set_fault("flaky", share=0.5)
    platform = HttpJsonPlatform(url=sim.url, token="t", timeout_s=0.5, batch_size=1, concurrency=4)
    try:
        outcomes = [r.outcome for r in await platform.send(jobs(60))]
    finally:
        await platform.aclose()
    unavailable = outcomes.count(Outcome.UNAVAILABLE)
    assert 10 <= unavailable <= 50
    assert outcomes.count(Outcome.ACCEPTED) == 60 - unavailable == sim.stats()["received"]


async def test_wrong_token_is_unavailable(tmp_path: Path) -> None:
    with running_sim(log=tmp_path / "sim.log", extra_args=["--token", "right"]) as sim:
        wrong = HttpJsonPlatform(url=sim.url, token="wrong", timeout_s=1.0, batch_size=10)
        right = HttpJsonPlatform(url=sim.url, token="right", timeout_s=1.0, batch_size=10)
        try:
            assert [r.outcome for r in await wrong.send(jobs(2))] == [Outcome.UNAVAILABLE] * 2
            assert [r.outcome for r in await right.send(jobs(2))] == [Outcome.ACCEPTED] * 2
        finally:
            await wrong.aclose()
            await right.aclose()
        assert sim.stats()["received"] == 2
