"""How a worker settles the message of a bundle once each of its jobs has an outcome."""

from __future__ import annotations

from dataclasses import asdict

import orjson
import pytest

from shared.envelope import H_POSSIBLE_DUPLICATE
from shared.model import DeadReason, Job, Status
from tests.worker_fakes import Message, Platform, Publisher, make_job, rooms
from workers.policy import DeliveryState
from workers.settlement import Held, Settlement


def _settlement(publisher: Publisher) -> Settlement:
    return Settlement(publisher=publisher, prefix="unit")


def _hold(settlement: Settlement, jobs: list[Job]) -> tuple[Message, list[Held]]:
    message = Message(jobs, headers={"x-relay-attempt": 1})
    state = DeliveryState.from_headers(message.headers, queue_site="a")
    held = settlement.hold(message.incoming(), queue_site="a", jobs=jobs, state=state)
    assert [h.job for h in held] == jobs and settlement.in_flight == len(jobs)
    return message, held


async def test_a_bundle_is_acked_once_every_job_is_settled() -> None:
    settlement = _settlement(Publisher())
    message, held = _hold(settlement, [make_job() for _ in range(3)])
    for h in held[:2]:
        await settlement.ack(h)
        assert message.settled == []
    await settlement.ack(held[2])
    assert message.settled == ["ack"] and settlement.in_flight == 0


async def test_a_bundle_handed_back_whole_is_nacked_whole() -> None:
    publisher = Publisher()
    settlement = _settlement(publisher)
    message, held = _hold(settlement, [make_job() for _ in range(3)])
    for h in held:
        await settlement.nack(h)
    assert message.settled == ["nack requeue=True"] and publisher.published == []


async def test_jobs_handed_back_from_a_bundle_go_back_as_a_bundle_before_the_ack() -> None:
    publisher = Publisher()
    settlement = _settlement(publisher)
    jobs = [make_job() for _ in range(4)]
    message, held = _hold(settlement, jobs)
    await settlement.ack(held[0])
    await settlement.nack(held[1])
    await settlement.ack(held[2])
    await settlement.nack(held[3])
    [requeued] = publisher.published
    assert requeued.jobs == [jobs[1], jobs[3]]
    assert (requeued.exchange, requeued.routing_key) == ("", "unit.site.a")
    assert requeued.headers == message.headers  # the delivery state the bundle had
    assert message.settled == ["ack"]


async def test_jobs_of_a_redelivered_bundle_handed_back_carry_the_possible_duplicate_mark() -> None:
    publisher = Publisher()
    settlement = _settlement(publisher)
    jobs = [make_job() for _ in range(2)]
    message = Message(jobs, headers={"x-relay-attempt": 0, "x-replay": 2}, redelivered=True)
    state = DeliveryState.from_headers(message.headers, queue_site="a", redelivered=True)
    held = settlement.hold(message.incoming(), queue_site="a", jobs=jobs, state=state)
    await settlement.ack(held[0])
    await settlement.nack(held[1])
    [requeued] = publisher.published
    # A new message is not redelivered: the mark must travel in its headers.
    assert requeued.headers == {**message.headers, H_POSSIBLE_DUPLICATE: True}


async def test_when_the_hand_back_is_not_confirmed_the_whole_message_goes_back() -> None:
    settlement = _settlement(Publisher(fail=True))
    message, held = _hold(settlement, [make_job() for _ in range(2)])
    await settlement.ack(held[0])
    await settlement.nack(held[1])
    assert message.settled == ["nack requeue=True"]


async def test_a_job_settled_twice_counts_once() -> None:
    settlement = _settlement(Publisher())
    message, held = _hold(settlement, [make_job() for _ in range(2)])
    await settlement.ack(held[0])
    await settlement.nack(held[0])
    assert message.settled == [] and settlement.in_flight == 1
    await settlement.ack(held[1])
    assert message.settled == ["ack"]


async def test_a_message_whose_channel_is_gone_is_forgotten_not_settled() -> None:
    settlement = _settlement(Publisher())
    message, held = _hold(settlement, [make_job() for _ in range(2)])
    message.channel_lost = True
    assert all(h.stale for h in held)
    settlement.forget(held[0])
    await settlement.ack(held[1])
    assert message.settled == [] and settlement.in_flight == 0


@pytest.mark.parametrize("body", [b"garbage", b'{"v": 1, "jobs": []}'])
async def test_a_body_that_is_no_job_is_dead_lettered_and_acked(body: bytes) -> None:
    r = rooms()
    message = Message([make_job()], body=body)
    assert await r.intake.hold(message.incoming(), "a") == []
    [dead] = r.publisher.to("unit.dead")
    job, verdict = dead.dead
    assert job.id == message.message_id and job.body == body.decode()
    assert verdict["reason"] is DeadReason.MALFORMED
    assert message.settled == ["ack"] and r.settlement.in_flight == 0
    assert [rec.message_id for rec in r.recorder.records] == [message.message_id]


async def test_an_unreadable_job_of_a_bundle_is_dead_lettered_under_its_own_id_and_the_rest_delivered() -> (
    None
):
    r = rooms(platform=Platform(max_batch=10))
    good = [make_job() for _ in range(3)]
    items = [asdict(job) for job in good]
    items[1]["priority"] = "high"  # a field a newer producer added: read, ignored
    broken = {**asdict(make_job()), "id": "b" * 32}
    del broken["to"]
    nameless = {"tenant": "t", "body": "no id"}
    body = orjson.dumps({"v": 1, "jobs": [items[0], broken, items[1], nameless, items[2]]})
    message = Message(good, body=body)
    held = await r.intake.hold(message.incoming(), "a")
    assert [h.job for h in held] == good
    dead = {job.id: (job, verdict) for job, verdict in (p.dead for p in r.publisher.to("unit.dead"))}
    assert len(dead) == 2 and "b" * 32 in dead and not set(dead) & {job.id for job in good}
    for job, verdict in dead.values():
        assert verdict["reason"] is DeadReason.MALFORMED and orjson.loads(job.body) in (broken, nameless)
    assert "to" in dead["b" * 32][1]["detail"]
    assert message.settled == []  # its other jobs are not settled yet
    await r.delivery.run(held)
    assert r.platform.sent == good and message.settled == ["ack"]
    assert {rec.status for rec in r.recorder.records} == {Status.DEAD, Status.SENT}
