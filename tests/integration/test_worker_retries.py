"""Retries through the delay queues: attempt counts in headers, the site switch, attempts exhausted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.model import DeadReason, Outcome, Status
from tests.integration.failover_harness import Relay, make_job, publisher, running_relay

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def failing_sites(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> AsyncIterator[Relay]:
    # A breaker that never opens, so every attempt goes the per-message retry way.
    async with running_relay(
        tmp_path_factory.mktemp("retries"),
        broker_url=broker_url,
        workers={"a": 1, "b": 1},
        worker={"breaker_failure_threshold": 1000, "attempts_per_site": 2, "max_attempts": 4},
    ) as r:
        yield r


async def test_unavailable_everywhere_retries_switches_site_then_dead_letters(failing_sites: Relay) -> None:
    r = failing_sites
    for sim in r.sims.values():
        sim.set_fault("error")  # 500 without taking the message: unavailable
    async with publisher(r) as jobs:
        published = [make_job() for _ in range(3)]
        for job in published:
            await jobs.publish(job, site="a")
        assert await jobs.wait_all_final(timeout_s=30), r.logs()
        records = await jobs.events()
        dead = await jobs.dead_letters()
    for job in published:
        history = sorted((rec for rec in records if rec.message_id == job.id), key=lambda rec: rec.attempt)
        assert [rec.attempt for rec in history] == [1, 2, 3, 4]
        # Two attempts at a's platform, then the job moves to b's queue, where b's worker takes it.
        assert [rec.site for rec in history] == ["a", "a", "b", "b"]
        assert [rec.status for rec in history] == [
            Status.RETRYING,
            Status.RETRYING,
            Status.RETRYING,
            Status.DEAD,
        ]
        assert all(rec.outcome is Outcome.UNAVAILABLE and rec.detail for rec in history)
    verdicts = {job.id: verdict for job, verdict in dead}
    assert set(verdicts) == {job.id for job in published}
    for verdict in verdicts.values():
        assert verdict["reason"] is DeadReason.ATTEMPTS_EXHAUSTED
        assert verdict["attempts"] == 4 and verdict["site"] == "b"
    # Unavailable means "not received": the platforms counted nothing.
    assert sum(sim.stats()["received"] for sim in r.sims.values()) == 0
