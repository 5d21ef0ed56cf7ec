"""Workers deliver through real simulators: batching, statuses, heartbeats, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest

from shared.envelope import decode_heartbeat
from shared.model import CircuitState, DeadReason, Heartbeat, Outcome, Status
from shared.topology import heartbeat_exchange, site_queue
from tests.integration.failover_harness import (
    Relay,
    all_consuming,
    make_job,
    publisher,
    rejected_for_good,
    running_relay,
    tally,
)

pytestmark = pytest.mark.integration

BATCH_SIZE = 20


@pytest.fixture(scope="module")
async def two_sites(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> AsyncIterator[Relay]:
    """One worker per site; the platforms take batches of up to BATCH_SIZE."""
    async with running_relay(
        tmp_path_factory.mktemp("delivery"),
        broker_url=broker_url,
        workers={"a": 1, "b": 1},
        metrics=True,
        site={"batch_size": BATCH_SIZE},
    ) as r:
        yield r


@pytest.fixture(autouse=True)
async def clean_platforms(two_sites: Relay) -> None:
    for sim in two_sites.sims.values():
        sim.set_fault("none")
    await all_consuming(two_sites)


async def test_jobs_are_delivered_once_in_batches_with_a_delivered_status(two_sites: Relay) -> None:
    r = two_sites
    async with publisher(r) as jobs:
        await jobs.stream(600, rate_per_s=3000)
        assert await jobs.wait_all_final(timeout_s=20), r.logs()
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records)
        assert result.lost == []
        assert result.cross_site == set()
        delivered = [rec for rec in records if rec.status is Status.SENT]
        assert sorted(rec.message_id for rec in delivered) == sorted(job.id for job in jobs.published)
        assert all(rec.outcome is Outcome.ACCEPTED and rec.attempt == 1 for rec in delivered)
        assert {rec.site for rec in delivered} == {"a", "b"}
        # Jobs that arrive together share a request, and so share its latency. How many share one depends
        # on timing (a fast worker makes small batches), so check that batching happens, not an average.
        jobs_per_request = Counter((rec.site, rec.latency_ms) for rec in delivered)
        assert len(jobs_per_request) < len(delivered)
        assert max(jobs_per_request.values()) >= 5, jobs_per_request.most_common(3)
        assert await jobs.queue_depth(site_queue(r.prefix, "a")) == 0


async def test_heartbeats_report_each_worker(two_sites: Relay) -> None:
    r = two_sites
    pids = {proc.pid for proc in r.workers}
    connection = await aio_pika.connect(r.broker_url)
    async with connection, publisher(r) as jobs:
        channel = await connection.channel()
        exchange = await channel.get_exchange(heartbeat_exchange(r.prefix))
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        for _ in range(10):
            await jobs.publish(make_job(), site="a")
        assert await jobs.wait_all_final(timeout_s=10)
        beats: dict[int, Heartbeat] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and set(beats) != pids:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            beat = decode_heartbeat(message.body)
            beats[beat.pid] = beat
        assert set(beats) == pids, r.logs()
        assert {beat.site for beat in beats.values()} == {"a", "b"}
        for beat in beats.values():
            assert beat.circuit == CircuitState.CLOSED
            assert beat.worker == f"{beat.host}:{beat.pid}" and beat.concurrency > 0
        assert sum(beat.delivered_total for beat in beats.values()) >= 10


async def test_rejected_and_expired_jobs_end_as_dead_letters_once(two_sites: Relay) -> None:
    r = two_sites
    share = 0.3
    for sim in r.sims.values():
        sim.set_fault("reject", share=share)
    async with publisher(r) as jobs:
        expired = [make_job(validity_s=-1) for _ in range(5)]
        fresh = [make_job() for _ in range(60)]
        for job in [*expired, *fresh]:
            await jobs.publish(job, site="a")
        will_reject = {job.id for job in fresh if rejected_for_good(job.id, share)}
        assert will_reject, "the share must reject some of 60"
        assert await jobs.wait_all_final(timeout_s=15), r.logs()
        await asyncio.sleep(0.3)
        dead = await jobs.dead_letters()
        reasons = {job.id: verdict["reason"] for job, verdict in dead}
        assert len(dead) == len(reasons), "a job was dead-lettered twice"
        assert reasons == {
            **{job.id: DeadReason.EXPIRED for job in expired},
            **dict.fromkeys(will_reject, DeadReason.REJECTED),
        }
        by_id = {job.id: job for job in fresh}
        for job, verdict in dead:
            if verdict["reason"] is DeadReason.REJECTED:
                assert verdict["detail"] and verdict["attempts"] == 1
                assert job == by_id[job.id]  # the whole job travels with the dead letter
            else:
                assert verdict["attempts"] == 0
        finals = await jobs.final_statuses()
        assert {i for i, s in finals.items() if s == [Status.EXPIRED]} == {j.id for j in expired}
        assert {i for i, s in finals.items() if s == [Status.REJECTED]} == will_reject
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records, excluded=set(reasons))
        result.assert_no_loss_and_only_marked_duplicates()
        # A rejection is final: never retried at the other site.
        assert result.cross_site == set()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_metrics_count_deliveries_dead_letters_and_circuit(two_sites: Relay) -> None:
    r = two_sites
    async with publisher(r) as jobs:
        for _ in range(20):
            await jobs.publish(make_job(), site="a")
        await jobs.publish(make_job(validity_s=-1), site="a")
        assert await jobs.wait_all_final(timeout_s=15), r.logs()
    texts = []
    async with httpx.AsyncClient() as client:
        for port in r.metrics_ports.values():
            texts.append((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
    assert len(texts) == 2
    both = "\n".join(texts)
    assert _metric(both, "relay_worker_deliveries_total", outcome="accepted") >= 20
    assert _metric(both, "relay_worker_dead_letters_total", reason="expired") >= 1
    assert _metric(both, "relay_worker_circuit_state") == 0
    assert _metric(both, "relay_worker_delivery_latency_seconds_count") >= 1
    assert "relay_worker_in_flight{" in both
