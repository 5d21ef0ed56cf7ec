"""Guarantees at the edges of a bundle: a worker killed mid-bundle, and a bundle with a job it cannot read.

Real RabbitMQ, real simulators, real `relay worker` processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from shared.model import DeadReason, Job, Status
from shared.topology import jobs_exchange
from tests.integration.failover_harness import (
    Relay,
    make_job,
    publisher,
    running_relay,
    sigkill,
    wait_for_consumers,
    wait_until,
)

pytestmark = pytest.mark.integration

BUNDLE_JOBS = 20
CONCURRENCY = 2
SLOW_MS = 400


def _set_fault(admin_url: str, mode: str, **options: int) -> None:
    httpx.post(f"{admin_url}/faults", json={"mode": mode, **options}, timeout=5).raise_for_status()


@pytest.fixture
async def site_a(tmp_path: Path, broker_url: str) -> AsyncIterator[Relay]:
    """One worker of site a, sending two jobs at a time, one per request."""
    async with running_relay(
        tmp_path, broker_url=broker_url, workers={"a": 1}, worker={"concurrency": CONCURRENCY}
    ) as r:
        yield r


async def test_a_worker_killed_mid_bundle_leaves_every_extra_copy_marked(site_a: Relay) -> None:
    r = site_a
    sim = r.sims["a"]
    # Slow answers: the worker holds the bundle (one message, acked only when all its jobs are settled)
    # long enough to deliver some, have others in flight at the platform, and not yet send the rest.
    _set_fault(sim.admin_url, "slow", latency_ms=SLOW_MS)
    async with publisher(r) as jobs:
        bundle = [make_job() for _ in range(BUNDLE_JOBS)]
        await jobs.publish_bundle(bundle, site="a")
        assert await wait_until(lambda: sim.stats()["received"] >= 2 * CONCURRENCY + 1, timeout_s=20), (
            r.logs()
        )
        sigkill(r.workers[0])
        reached_before = set(sim.references())
        assert 0 < len(reached_before) < BUNDLE_JOBS, "the kill must land mid-bundle"
        # Before the kill some jobs were accepted and reported: their records are on the events queue.
        delivered_before = {rec.message_id for rec in await jobs.events() if rec.status is Status.SENT}
        assert delivered_before, "some jobs must have been delivered before the kill"

        _set_fault(sim.admin_url, "none")
        r.start_worker("a")  # the broker redelivers the whole bundle to it
        await wait_for_consumers(jobs, dict.fromkeys(r.sims, 1))
        assert await jobs.wait_all_final(timeout_s=30), r.logs()
        records = await jobs.events()
        finals = await jobs.final_statuses()

    # Nothing lost: every job reached the platform and is delivered.
    assert set(sim.references()) == {job.id for job in bundle}
    assert all(set(finals[job.id]) == {Status.SENT} for job in bundle)
    # Every extra copy the platform received is matched by a possible-duplicate mark...
    extra_copies = sim.stats()["duplicates"]
    assert extra_copies >= len(reached_before), "each job sent before the kill was sent again"
    marked = [rec for rec in records if rec.marks_duplicate]
    assert len(marked) >= extra_copies, f"{extra_copies} extra copies, {len(marked)} marked attempts"
    # ... on the messages that have them: each job that reached the platform before the kill.
    marked_ids = {rec.message_id for rec in marked}
    assert reached_before <= marked_ids, reached_before - marked_ids
    # The mark is on the resend, the attempt that made the copy.
    for rec in marked:
        assert rec.possible_duplicate and rec.status is Status.SENT


async def test_a_bundle_with_an_unreadable_job_delivers_the_rest(site_a: Relay) -> None:
    r = site_a
    good = [make_job() for _ in range(4)]
    items = [asdict(job) for job in good]
    items[0]["priority"] = "high"  # a newer producer's optional field: ignored
    broken = asdict(make_job())
    del broken["to"]  # a required field missing
    body = orjson.dumps({"v": 1, "jobs": [items[0], items[1], broken, items[2], items[3]]})
    async with publisher(r) as jobs:
        # The broken job as the publisher's books know it, by id: it must end too, as a dead letter.
        jobs.published.extend([*good, Job(**{**broken, "to": ""})])
        connection = await aio_pika.connect(r.broker_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(jobs_exchange(r.prefix))
            await exchange.publish(
                aio_pika.Message(body, message_id=good[0].id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="a",
                mandatory=True,
            )
        assert await jobs.wait_all_final(timeout_s=20), r.logs()
        finals = await jobs.final_statuses()
        assert all(finals[job.id] == [Status.SENT] for job in good)
        assert finals[broken["id"]] == [Status.DEAD]
        dead = await jobs.dead_letters()
    assert set(r.sims["a"].references()) == {job.id for job in good}
    dead_ids = {job.id: verdict for job, verdict in dead}
    assert set(dead_ids) == {broken["id"]}
    assert dead_ids[broken["id"]]["reason"] is DeadReason.MALFORMED
