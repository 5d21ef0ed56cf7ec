"""A callback worker's metrics: each try counted once by its result, its request timed, and each host's
lane read at scrape time. The worker's broker, store and endpoints are stand-ins here; the integration
test of callbacks reads the same metrics from a running worker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import create_async_engine

from shared.callbacks.wire import CallbackJob, encode_callback
from shared.envelope import H_CALLBACK_ATTEMPT
from shared.settings import load_settings
from workers.callbacks.lanes import Lanes
from workers.callbacks.metrics import CallbackMetrics
from workers.callbacks.runtime import CallbackWorker
from workers.callbacks.sender import Tried

LANE_GAUGES = {"relay_callbacks_lane_waiting", "relay_callbacks_lane_in_flight"}


def _samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _sent(registry: Any) -> dict[str, float]:
    return {
        dict(labels)["result"]: value
        for (name, labels), value in _samples(registry).items()
        if name == "relay_callbacks_sent_total"
    }


@dataclass
class FakeMessage:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = "m"
    settled: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("nack")


class FakeSender:
    def __init__(self, answers: Iterator[Tried]) -> None:
        self._answers = answers

    async def send(self, job: CallbackJob, secrets: list[str]) -> Tried:
        await asyncio.sleep(0.01)
        return next(self._answers)

    async def close(self) -> None:
        pass


class FakeSecrets:
    async def of(self, tenant: str) -> list[str]:
        return ["s" * 32]


class FakeDead:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    async def record(self, job: Any, reason: Any, detail: str, attempts: int) -> None:
        self.reasons.append(str(reason))


class FakePublisher:
    def __init__(self) -> None:
        self.retries: list[str] = []

    async def publish(self, body: bytes, *, routing_key: str, **kwargs: Any) -> None:
        self.retries.append(routing_key)


def _job(n: int) -> CallbackJob:
    return CallbackJob(
        event_id=f"e{n}", tenant="t", url="http://127.0.0.1:9/cb", message_id=f"m{n}",
        reference=None, status="delivered", site="a", at=1.0,
    )  # fmt: skip


async def test_each_try_is_counted_once_by_its_result_and_timed(tmp_path: Any) -> None:
    settings = load_settings(callbacks={"max_attempts": 2, "retry_delays_s": [1]})
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    worker = CallbackWorker(
        settings=settings,
        connection=None,  # type: ignore[arg-type]
        publisher=FakePublisher(),  # type: ignore[arg-type]
        engine=engine,
        stop=asyncio.Event(),
    )
    answers = [
        Tried(status_code=204, detail="HTTP 204"),
        Tried(status_code=410, detail="HTTP 410"),
        Tried(status_code=500, detail="HTTP 500"),  # first try: retried
        Tried(status_code=None, detail="no answer"),  # last try: dead
        Tried(status_code=None, detail="10.0.0.1 is private", refused=True),
    ]
    worker._sender = FakeSender(iter(answers))  # type: ignore[assignment]
    worker._secrets = FakeSecrets()  # type: ignore[assignment]
    dead = FakeDead()
    worker._dead = dead  # type: ignore[assignment]
    for n, attempt in enumerate([0, 0, 0, 1, 0]):
        message = FakeMessage(encode_callback(_job(n)), headers={H_CALLBACK_ATTEMPT: attempt})
        await worker._handle(message)  # type: ignore[arg-type]
        assert message.settled == ["ack"]
    assert _sent(worker.metrics.registry) == {
        "2xx": 1.0, "gone": 1.0, "retry": 1.0, "dead": 1.0, "refused-address": 1.0,
    }  # fmt: skip
    assert len(dead.reasons) == 2
    samples = _samples(worker.metrics.registry)
    # Every try is timed, the refused one too (its address is checked inside the try).
    assert samples[("relay_callbacks_request_duration_seconds_count", ())] == 5.0
    assert samples[("relay_callbacks_request_duration_seconds_sum", ())] >= 0.05
    await engine.dispose()


async def test_lane_gauges_show_each_hosts_waiting_and_in_flight_callbacks() -> None:
    lanes = Lanes(concurrency=1, waiting=2)
    metrics = CallbackMetrics(lanes=lanes.occupancy)
    release = asyncio.Event()

    async def hold(host: str) -> None:
        async with lanes.slot(host):
            await release.wait()

    tasks = [asyncio.create_task(hold("slow:443")) for _ in range(3)]
    tasks.append(asyncio.create_task(hold("fast:80")))
    await asyncio.sleep(0)
    samples = _samples(metrics.registry)
    gauges = {
        (name, dict(labels)["host"]): value
        for (name, labels), value in samples.items()
        if name in LANE_GAUGES
    }
    assert gauges == {
        ("relay_callbacks_lane_waiting", "slow:443"): 2.0,
        ("relay_callbacks_lane_in_flight", "slow:443"): 1.0,
        ("relay_callbacks_lane_waiting", "fast:80"): 0.0,
        ("relay_callbacks_lane_in_flight", "fast:80"): 1.0,
    }
    release.set()
    await asyncio.gather(*tasks)
    assert not [k for k in _samples(metrics.registry) if k[0] in LANE_GAUGES]
