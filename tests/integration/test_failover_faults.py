"""Failover between two sites under every simulated platform fault, a killed worker and a stopped one.

Real RabbitMQ, real `relay platform-sim` and `relay worker` processes. Each fault hits site a's platform
while jobs stream to both sites; then it clears. Nothing accepted may be lost, duplicates may only come
from ambiguous attempts, and site a must take work again afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from shared.model import DeadReason, Status
from tests.helpers import missing_service
from tests.integration.failover_harness import (
    FAST_WORKER,
    JobPublisher,
    Relay,
    all_consuming,
    close_broker_connection_of,
    make_job,
    publisher,
    rejected_for_good,
    running_relay,
    sigkill,
    tally,
    wait_for_consumers,
    wait_until,
)

pytestmark = pytest.mark.integration

STREAM_JOBS = 300
STREAM_RATE_PER_S = 150.0
FAULT_AFTER_S = 0.5
FAULT_FOR_S = 2.0


@pytest.fixture(scope="module")
async def two_sites(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> AsyncIterator[Relay]:
    async with running_relay(
        tmp_path_factory.mktemp("failover"), broker_url=broker_url, workers={"a": 1, "b": 1}
    ) as r:
        yield r


@pytest.fixture(autouse=True)
async def healthy_platforms(two_sites: Relay) -> None:
    for sim in two_sites.sims.values():
        sim.set_fault("none")
    await all_consuming(two_sites, timeout_s=30)
    for sim in two_sites.sims.values():
        sim.reset()


async def _a_takes_work_again(r: Relay, jobs: JobPublisher, *, timeout_s: float = 20.0) -> bool:
    before = r.sims["a"].stats()["received"]

    async def a_received_more() -> bool:
        for _ in range(5):
            await jobs.publish(make_job(), site="a")
        return r.sims["a"].stats()["received"] > before

    return await wait_until(a_received_more, timeout_s=timeout_s, interval_s=0.5)


FAULTS = [
    pytest.param("down", {}, True, False, id="down"),
    pytest.param("blackhole", {}, True, False, id="blackhole"),
    pytest.param("error", {}, True, False, id="error"),
    pytest.param("slow", {"latency_ms": 300}, False, False, id="slow"),
    pytest.param("reject", {"share": 0.2}, False, False, id="reject"),
    pytest.param("flaky", {"share": 0.5}, False, False, id="flaky"),
    # Jobs in bundles, as the ingress publishes concurrent submits: a bundle's jobs part ways (some
    # delivered, some retried, failed over or handed back) and none may be lost or sent twice for it.
    pytest.param("down", {}, True, True, id="down-bundled"),
    pytest.param("blackhole", {}, True, True, id="blackhole-bundled"),
    pytest.param("reject", {"share": 0.2}, False, True, id="reject-bundled"),
    pytest.param("flaky", {"share": 0.5}, False, True, id="flaky-bundled"),
]


@pytest.mark.parametrize(("mode", "options", "fails_over", "bundled"), FAULTS)
async def test_fault_at_site_a_mid_stream_loses_nothing(
    two_sites: Relay, mode: str, options: dict[str, float], fails_over: bool, bundled: bool
) -> None:
    r = two_sites
    async with publisher(r, bundled=bundled) as jobs:
        stream = asyncio.create_task(jobs.stream(STREAM_JOBS, rate_per_s=STREAM_RATE_PER_S))
        await asyncio.sleep(FAULT_AFTER_S)
        r.sims["a"].set_fault(mode, **options)
        fault_began = len(jobs.published)
        await asyncio.sleep(FAULT_FOR_S)
        during = {job.id for job in jobs.published[fault_began:] if jobs.site_of[job.id] == "a"}
        r.sims["a"].set_fault("none")
        await stream
        assert await _a_takes_work_again(r, jobs), "site a took no work after its fault cleared\n" + r.logs()
        assert await jobs.wait_all_final(timeout_s=40), r.logs()

        dead = await jobs.dead_letters()
        rejected = {job.id for job, verdict in dead if verdict["reason"] is DeadReason.REJECTED}
        assert {verdict["reason"] for _, verdict in dead} <= {DeadReason.REJECTED}, dead
        if mode == "reject":
            assert rejected, "a reject fault of share 0.2 over a stream rejects some"
            assert all(rejected_for_good(i, options["share"]) for i in rejected)
        else:
            assert not rejected
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records, excluded=rejected)
        result.assert_no_loss_and_only_marked_duplicates()
        finals = await jobs.final_statuses()
        assert all(set(statuses) == {Status.SENT} for i, statuses in finals.items() if i not in rejected)
        if fails_over:
            # Site a's jobs published while its platform failed went out through site b.
            taken_by_b = during & set(r.sims["b"].references())
            assert len(taken_by_b) >= len(during) // 2, (len(taken_by_b), len(during))


async def test_both_sites_down_then_one_back_delivers_everything(two_sites: Relay) -> None:
    r = two_sites
    r.sims["a"].set_fault("down")
    r.sims["b"].set_fault("down")
    async with publisher(r) as jobs:
        await jobs.stream(100, rate_per_s=200)
        await asyncio.sleep(2.0)
        received = sum(sim.stats()["received"] for sim in r.sims.values())
        assert received == 0
        finals = await jobs.final_statuses()
        assert not finals, "nothing can be final while both platforms are down"
        r.sims["b"].set_fault("none")
        assert await jobs.wait_all_final(timeout_s=40), r.logs()
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records)
        result.assert_no_loss_and_only_marked_duplicates()
        assert set(r.sims["b"].references()) >= {job.id for job in jobs.published}
        assert all(set(s) == {Status.SENT} for s in (await jobs.final_statuses()).values())


@pytest.mark.parametrize("bundled", [False, True], ids=["single", "bundled"])
async def test_sigkill_of_a_worker_mid_stream_loses_nothing(two_sites: Relay, bundled: bool) -> None:
    r = two_sites
    victim = r.start_worker("a")
    async with publisher(r, bundled=bundled) as jobs:
        await wait_for_consumers(jobs, {"a": 3, "b": 3}, timeout_s=30)
        stream = asyncio.create_task(jobs.stream(STREAM_JOBS, rate_per_s=STREAM_RATE_PER_S))
        await asyncio.sleep(1.0)
        sigkill(victim)
        await stream
        assert await jobs.wait_all_final(timeout_s=30), r.logs()
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records)
        # Jobs the killed worker had sent but not acked are redelivered; each resend is marked.
        result.assert_no_loss_and_only_marked_duplicates()


@pytest.mark.parametrize("bundled", [False, True], ids=["single", "bundled"])
async def test_sigterm_of_a_worker_mid_stream_loses_nothing_and_exits_in_grace(
    two_sites: Relay, bundled: bool
) -> None:
    r = two_sites
    leaving = r.start_worker("a")
    async with publisher(r, bundled=bundled) as jobs:
        await wait_for_consumers(jobs, {"a": 3, "b": 3}, timeout_s=30)
        # A slow platform keeps requests in flight at the moment of the SIGTERM.
        r.sims["a"].set_fault("slow", latency_ms=200)
        stream = asyncio.create_task(jobs.stream(STREAM_JOBS, rate_per_s=STREAM_RATE_PER_S))
        await asyncio.sleep(1.0)
        began = time.monotonic()
        leaving.terminate()
        exit_code = await asyncio.to_thread(leaving.wait, 30)
        took_s = time.monotonic() - began
        await stream
        assert exit_code == 0
        assert took_s < float(FAST_WORKER["grace_s"]), took_s
        r.sims["a"].set_fault("none")
        assert await jobs.wait_all_final(timeout_s=30), r.logs()
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records)
        # A graceful stop finishes or hands back what it holds: no duplicate at all beyond ambiguous ones.
        result.assert_no_loss_and_only_marked_duplicates()


async def test_broker_connection_loss_mid_stream_loses_nothing(two_sites: Relay) -> None:
    r = two_sites
    worker_a = r.workers[0]
    async with publisher(r) as jobs:
        stream = asyncio.create_task(jobs.stream(STREAM_JOBS, rate_per_s=STREAM_RATE_PER_S))
        await asyncio.sleep(0.7)
        closed = await asyncio.to_thread(close_broker_connection_of, worker_a.pid)
        if not closed:
            missing_service("rabbitmqctl cannot close the worker's connection on this broker")
        await stream
        assert await jobs.wait_all_final(timeout_s=30), r.logs()
        assert worker_a.poll() is None, "the worker must survive the connection loss"
        # The worker reconnected and consumes again.
        await all_consuming(r, timeout_s=20)
        records = await jobs.events()
        result = tally(jobs.published, r.sims, records)
        # Jobs sent but not yet acked when the connection dropped are redelivered, each resend marked.
        result.assert_no_loss_and_only_marked_duplicates()


async def test_open_breaker_cancels_own_and_standby_consumers_until_recovery(two_sites: Relay) -> None:
    r = two_sites
    r.sims["a"].set_fault("down")
    async with publisher(r) as jobs:
        for _ in range(20):
            await jobs.publish(make_job(), site="a")

        async def only_b_consumes() -> bool:
            # A trickle of jobs keeps the breaker failing its probes, so it stays open longer each time.
            await jobs.publish(make_job(), site="a")
            return await jobs.consumer_count("a") == 1 and await jobs.consumer_count("b") == 1

        # Site a's worker cannot deliver, so it takes neither its own jobs nor site b's.
        assert await wait_until(only_b_consumes, timeout_s=10, interval_s=0.1), r.logs()
        assert await jobs.wait_all_final(timeout_s=20), r.logs()
        assert set(r.sims["b"].references()) >= {job.id for job in jobs.published}
        r.sims["a"].set_fault("none")
        await all_consuming(r, timeout_s=30)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", "-q", *args], check=True, timeout=120)


async def test_broker_restart_mid_stream_loses_nothing(two_sites: Relay, broker_url: str) -> None:
    """The local RabbitMQ application stops and starts while both sites' workers work through a backlog:
    they reconnect by themselves and every job reaches a platform."""
    if shutil.which("rabbitmqctl") is None or urlsplit(broker_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("restarting the broker needs rabbitmqctl and the broker on this machine")
    r = two_sites
    alive = [worker for worker in r.workers if worker.poll() is None]  # earlier tests stopped some
    for sim in r.sims.values():
        sim.set_fault("slow", latency_ms=200)  # the backlog lasts long enough for the restart to hit mid-way
    try:
        async with publisher(r) as jobs:
            for n in range(STREAM_JOBS):
                await jobs.publish(make_job(), site=("a", "b")[n % 2])
            await asyncio.sleep(0.5)
            delivered_before = sum(sim.stats()["unique"] for sim in r.sims.values())
            assert 0 < delivered_before < STREAM_JOBS, "the restart must hit a backlog being worked"
            await asyncio.to_thread(_rabbitmqctl, "stop_app")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(_rabbitmqctl, "start_app")
            await asyncio.to_thread(_rabbitmqctl, "await_startup")
            for sim in r.sims.values():
                sim.set_fault("none")
            await jobs.reconnected()
            assert await jobs.wait_all_final(timeout_s=60), r.logs()
            assert all(worker.poll() is None for worker in alive), "workers must survive the restart"
            await all_consuming(r, timeout_s=30)
            records = await jobs.events()
            result = tally(jobs.published, r.sims, records)
            # Jobs a platform took whose ack the restart cut off come again, each resend marked.
            result.assert_no_loss_and_only_marked_duplicates()
    finally:
        await asyncio.to_thread(_rabbitmqctl, "start_app")  # whatever happened, leave the broker running
        await asyncio.to_thread(_rabbitmqctl, "await_startup")
