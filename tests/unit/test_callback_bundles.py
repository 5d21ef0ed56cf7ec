"""Callback jobs in bundles: the recorder publishes a fold's jobs as few broker messages, the callback
worker settles each job on its own (sent, retried on its own, dead) and acks the bundle once all are,
and a bundle's jobs to one host wait in its lane rather than being put back for later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from ingress.callback_jobs import BUNDLE_MAX, publish_callbacks
from shared.callbacks.wire import (
    CallbackJob,
    decode_callback,
    decode_callbacks,
    encode_callback,
    encode_callbacks,
)
from shared.envelope import H_CALLBACK_ATTEMPT
from shared.errors import EnvelopeError
from shared.settings import load_settings
from tests.unit.test_callback_metrics import FakeDead, FakeMessage, FakeSecrets, FakeSender, _sent
from workers.callbacks.lanes import LaneFull, Lanes
from workers.callbacks.runtime import CallbackWorker
from workers.callbacks.sender import Tried


def _job(n: int, host: str = "127.0.0.1:9") -> CallbackJob:
    return CallbackJob(
        event_id=f"e{n}", tenant="t", url=f"http://{host}/cb", message_id=f"m{n}",
        reference=None, status="delivered", site="a", at=1.0,
    )  # fmt: skip


class Publisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[tuple[bytes, str, dict[str, Any]]] = []

    async def publish(self, body: bytes, *, routing_key: str, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("broker away")
        self.published.append((body, routing_key, kwargs.get("headers") or {}))


def test_a_bundle_round_trips_and_a_single_job_is_encoded_as_before() -> None:
    jobs = [_job(n) for n in range(3)]
    assert decode_callbacks(encode_callbacks(jobs)) == jobs
    assert encode_callbacks(jobs[:1]) == encode_callback(jobs[0])
    assert decode_callbacks(encode_callback(jobs[0])) == jobs[:1]
    with pytest.raises(EnvelopeError):
        decode_callback(encode_callbacks(jobs))
    for bad in (b'{"v": 1, "callbacks": []}', b'{"v": 1, "callbacks": [{"event_id": 1}]}', b"[]"):
        with pytest.raises(EnvelopeError):
            decode_callbacks(bad)


async def test_the_recorder_publishes_a_folds_jobs_in_bundles() -> None:
    publisher = Publisher()
    jobs = [_job(n) for n in range(BUNDLE_MAX + 1)]
    await publish_callbacks(publisher, "p", jobs, timeout_s=1.0)  # type: ignore[arg-type]
    bundles = [decode_callbacks(body) for body, _, _ in publisher.published]
    assert [len(b) for b in bundles] == [BUNDLE_MAX, 1]
    assert [j for b in bundles for j in b] == jobs


async def test_a_bundles_jobs_to_one_host_all_wait_in_its_lane_but_another_message_is_put_back() -> None:
    lanes = Lanes(concurrency=1, waiting=0)
    release = asyncio.Event()
    bundle = object()

    async def hold(group: object) -> None:
        async with lanes.slot("slow:443", group):
            await release.wait()

    running = [asyncio.create_task(hold(bundle)) for _ in range(5)]
    await asyncio.sleep(0)
    assert lanes.held("slow:443") == 5
    assert lanes.occupancy() == {"slow:443": (4, 1)}
    with pytest.raises(LaneFull):
        async with lanes.slot("slow:443"):
            pass
    release.set()
    await asyncio.gather(*running)
    assert lanes.held("slow:443") == 0


async def test_a_callback_waiting_longer_than_the_lane_allows_is_put_back() -> None:
    lanes = Lanes(concurrency=1, waiting=4, wait_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with lanes.slot("slow:443", "bundle"):
            await release.wait()

    running = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(LaneFull):
        async with lanes.slot("slow:443", "bundle"):
            pass
    assert lanes.occupancy() == {"slow:443": (0, 1)}
    release.set()
    await running
    assert lanes.occupancy() == {}


def _worker(tmp_path: Any, publisher: Publisher, answers: list[Tried]) -> tuple[CallbackWorker, FakeDead]:
    settings = load_settings(callbacks={"max_attempts": 2, "retry_delays_s": [7]})
    worker = CallbackWorker(
        settings=settings,
        connection=None,  # type: ignore[arg-type]
        publisher=publisher,  # type: ignore[arg-type]
        engine=create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"),
        stop=asyncio.Event(),
    )
    worker._sender = FakeSender(iter(answers))  # type: ignore[assignment]
    worker._secrets = FakeSecrets()  # type: ignore[assignment]
    dead = FakeDead()
    worker._dead = dead  # type: ignore[assignment]
    return worker, dead


async def test_a_bundle_is_acked_once_each_job_is_sent_retried_on_its_own_or_dead(tmp_path: Any) -> None:
    publisher = Publisher()
    answers = [Tried(status_code=204, detail="")] * 3 + [Tried(status_code=500, detail="HTTP 500")]
    worker, dead = _worker(tmp_path, publisher, answers)
    message = FakeMessage(encode_callbacks([_job(n) for n in range(4)]))
    await worker._handle(message)  # type: ignore[arg-type]
    assert message.settled == ["ack"]
    assert _sent(worker.metrics.registry)["2xx"] == 3.0
    # The failed one alone, into the delay queue of its first try, marked as tried once.
    [(body, routing_key, headers)] = publisher.published
    assert decode_callbacks(body)[0].event_id in {f"e{n}" for n in range(4)}
    assert routing_key.endswith(".7s") and headers == {H_CALLBACK_ATTEMPT: 1}
    assert dead.reasons == []
    await worker._engine.dispose()


async def test_a_bundle_whose_retry_cannot_be_published_goes_back_to_its_queue(tmp_path: Any) -> None:
    answers = [Tried(status_code=204, detail=""), Tried(status_code=None, detail="no answer")]
    worker, _ = _worker(tmp_path, Publisher(fail=True), answers)
    message = FakeMessage(encode_callbacks([_job(0), _job(1)]))
    await worker._handle(message)  # type: ignore[arg-type]
    assert message.settled == ["nack"]
    await worker._engine.dispose()


async def test_a_parked_bundle_is_a_dead_callback_for_each_of_its_jobs(tmp_path: Any) -> None:
    worker, dead = _worker(tmp_path, Publisher(), [])
    message = FakeMessage(encode_callbacks([_job(0), _job(1), _job(2)]))
    await worker._parked(message)  # type: ignore[arg-type]
    assert message.settled == ["ack"] and dead.reasons == ["redelivery-limit"] * 3
    await worker._engine.dispose()
