"""How a worker settles the message of a bundle once each of its jobs has an outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from shared.envelope import decode_jobs, encode_jobs
from shared.errors import BrokerUnavailable
from shared.model import Job, new_message_id
from shared.settings import load_settings
from workers.platforms.base import Result
from workers.runtime import Worker


def _job() -> Job:
    return Job(id=new_message_id(), tenant="t", to="+31612345678", sender="S", body="b", expires_at=2e9)


class Message:
    """The parts of an incoming AMQP message a worker uses."""

    def __init__(self, jobs: list[Job]) -> None:
        self.body = encode_jobs(jobs)
        self.message_id = jobs[0].id
        self.headers: dict[str, Any] = {"x-relay-attempt": 1}
        self.channel = object()
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, *, requeue: bool) -> None:
        self.settled.append(f"nack requeue={requeue}")


class Publisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[dict[str, Any]] = []

    async def publish(self, body: bytes, **options: Any) -> None:
        if self.fail:
            raise BrokerUnavailable("no confirm")
        self.published.append({"jobs": decode_jobs(body), **options})


class Platform:
    max_batch = 1

    async def send(self, jobs: Sequence[Job]) -> list[Result]:
        raise AssertionError("not sent in these tests")

    async def aclose(self) -> None:
        return None


def _worker(publisher: Publisher) -> Worker:
    settings = load_settings(
        broker={"prefix": "unit"},
        sites={"a": {"url": "http://127.0.0.1:1/a"}, "b": {"url": "http://127.0.0.1:1/b"}},
    )
    worker = Worker(settings=settings, site="a", platform=Platform())
    worker._publisher = publisher  # type: ignore[assignment]
    return worker


async def _hold(worker: Worker, jobs: list[Job]) -> tuple[Message, list[Any]]:
    message = Message(jobs)
    held = await worker._hold(message, "a")  # type: ignore[arg-type]
    assert [h.job for h in held] == jobs and worker.in_flight == len(jobs)
    return message, held


async def test_a_bundle_is_acked_once_every_job_is_settled() -> None:
    worker = _worker(Publisher())
    message, held = await _hold(worker, [_job() for _ in range(3)])
    for h in held[:2]:
        await worker._ack(h)
        assert message.settled == []
    await worker._ack(held[2])
    assert message.settled == ["ack"] and worker.in_flight == 0


async def test_a_bundle_handed_back_whole_is_nacked_whole() -> None:
    publisher = Publisher()
    worker = _worker(publisher)
    message, held = await _hold(worker, [_job() for _ in range(3)])
    for h in held:
        await worker._nack(h)
    assert message.settled == ["nack requeue=True"] and publisher.published == []


async def test_jobs_handed_back_from_a_bundle_go_back_as_a_bundle_before_the_ack() -> None:
    publisher = Publisher()
    worker = _worker(publisher)
    jobs = [_job() for _ in range(4)]
    message, held = await _hold(worker, jobs)
    await worker._ack(held[0])
    await worker._nack(held[1])
    await worker._ack(held[2])
    await worker._nack(held[3])
    [requeued] = publisher.published
    assert requeued["jobs"] == [jobs[1], jobs[3]]
    assert (requeued["exchange"], requeued["routing_key"]) == ("", "unit.site.a")
    assert requeued["headers"] == message.headers  # the delivery state the bundle had
    assert message.settled == ["ack"]


async def test_when_the_hand_back_is_not_confirmed_the_whole_message_goes_back() -> None:
    worker = _worker(Publisher(fail=True))
    message, held = await _hold(worker, [_job() for _ in range(2)])
    await worker._ack(held[0])
    await worker._nack(held[1])
    assert message.settled == ["nack requeue=True"]


async def test_a_job_settled_twice_counts_once() -> None:
    worker = _worker(Publisher())
    message, held = await _hold(worker, [_job() for _ in range(2)])
    await worker._ack(held[0])
    await worker._nack(held[0])
    assert message.settled == [] and worker.in_flight == 1
    await worker._ack(held[1])
    assert message.settled == ["ack"]


@pytest.mark.parametrize("body", [b"garbage", b'{"v": 1, "jobs": []}'])
async def test_a_body_that_is_no_job_is_dead_lettered_and_acked(body: bytes) -> None:
    publisher = Publisher()
    worker = _worker(publisher)
    message = Message([_job()])
    message.body = body

    class Sink:
        async def record(self, record: Any) -> None:
            return None

    worker._sink = Sink()  # type: ignore[assignment]
    published: list[dict[str, Any]] = []

    async def publish(body: bytes, **options: Any) -> None:
        published.append(options)

    publisher.publish = publish  # type: ignore[method-assign]
    assert await worker._hold(message, "a") == []  # type: ignore[arg-type]
    assert [p["exchange"] for p in published] == ["unit.dead"]
    assert message.settled == ["ack"] and worker.in_flight == 0
