"""How a worker sends a batch: what is sent, what is handed back unsent, what never reaches the platform."""

from __future__ import annotations

import asyncio

from shared.model import DeadReason, Job, Outcome, Status
from tests.worker_fakes import Message, Platform, Rooms, make_job, rooms
from workers.platforms.base import Result
from workers.settlement import Held


async def _held(r: Rooms, jobs: list[Job]) -> tuple[Message, list[Held]]:
    message = Message(jobs)
    return message, await r.intake.hold(message.incoming(), "a")


async def test_a_batch_goes_out_in_one_request_and_is_settled() -> None:
    r = rooms(platform=Platform(max_batch=10))
    jobs = [make_job() for _ in range(3)]
    message, held = await _held(r, jobs)
    await r.delivery.run(held)
    assert r.platform.sent == jobs
    assert message.settled == ["ack"] and r.delivery.busy == 0 and r.delivery.idle.is_set()


async def test_an_expired_job_is_dead_lettered_without_a_send() -> None:
    r = rooms()
    message, held = await _held(r, [make_job(expires_at=1.0)])
    await r.delivery.run(held)
    assert r.platform.sent == []
    [dead] = r.publisher.to("unit.dead")
    assert dead.dead[1]["reason"] is DeadReason.EXPIRED and dead.dead[1]["attempts"] == 0
    assert [rec.status for rec in r.recorder.records] == [Status.EXPIRED]
    assert message.settled == ["ack"]


async def test_a_job_of_a_lost_channel_is_neither_sent_nor_settled() -> None:
    r = rooms()
    message, held = await _held(r, [make_job()])
    message.channel_lost = True
    await r.delivery.run(held)
    assert r.platform.sent == [] and message.settled == [] and r.settlement.in_flight == 0


async def test_an_adapter_that_raises_makes_the_attempt_ambiguous() -> None:
    def broken(job: Job) -> Result:
        raise RuntimeError("bug")

    r = rooms(platform=Platform(broken), breaker_failure_threshold=10)
    message, held = await _held(r, [make_job()])
    await r.delivery.run(held)
    [record] = r.recorder.records
    assert record.outcome is Outcome.AMBIGUOUS and "adapter error" in record.detail
    assert message.settled == ["ack"]  # republished for a retry


async def test_with_the_breaker_open_jobs_go_back_only_once_the_consumers_are_cancelled() -> None:
    r = rooms()
    await r.consumers.start()
    for _ in range(r.settings.worker.breaker_failure_threshold):
        r.circuit.failure()
    assert not r.circuit.allows_traffic()
    message, held = await _held(r, [make_job()])
    delivering = asyncio.create_task(r.delivery.run(held))
    await asyncio.sleep(0.05)
    assert message.settled == [] and not delivering.done()  # nacked now, it would come straight back
    await r.consumers.cancel()
    await delivering
    assert r.platform.sent == [] and message.settled == ["nack requeue=True"]
    assert r.outcomes.totals.failed_over == 1


async def test_a_probe_is_sent_though_the_breaker_is_open() -> None:
    r = rooms()
    for _ in range(r.settings.worker.breaker_failure_threshold):
        r.circuit.failure()
    message, held = await _held(r, [make_job()])
    await r.delivery.run(held, probe=True)
    assert r.platform.sent == [held[0].job] and message.settled == ["ack"]
