"""Stand-ins for what a worker's rooms touch (broker messages, publisher, event sink, queues, platform), and
the rooms wired to them as a worker wires them, for fast unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelInvalidStateError

from shared.envelope import decode_dead, decode_jobs, encode_job, encode_jobs
from shared.errors import BrokerUnavailable
from shared.model import AttemptRecord, Job, Outcome, new_message_id
from shared.settings import Settings, load_settings
from shared.topology import Topology, topology_from
from workers.circuit import Circuit
from workers.consumers import Consumers
from workers.delivery import Delivery
from workers.intake import Intake
from workers.metrics import WorkerMetrics
from workers.outcomes import Outcomes
from workers.platforms.base import Result
from workers.settlement import Settlement


def make_job(*, expires_at: float = 2e9, segments: int = 1) -> Job:
    return Job(
        id=new_message_id(),
        tenant="t",
        to="+31612345678",
        sender="S",
        body="b",
        expires_at=expires_at,
        segments=segments,
    )


class Message:
    """The parts of an incoming AMQP message a worker uses."""

    def __init__(
        self,
        jobs: list[Job] | None = None,
        *,
        body: bytes | None = None,
        headers: dict[str, Any] | None = None,
        redelivered: bool = False,
        routing_key: str = "a",
    ) -> None:
        jobs = jobs or []
        self.routing_key = routing_key  # a site's jobs queue, not its bulk lane
        if body is None:
            body = encode_job(jobs[0]) if len(jobs) == 1 else encode_jobs(jobs)
        self.body = body
        self.message_id = jobs[0].id if jobs else None
        self.headers: dict[str, Any] = headers if headers is not None else {"x-relay-attempt": 0}
        self.redelivered = redelivered
        self.channel_lost = False
        self.settled: list[str] = []

    @property
    def channel(self) -> object:
        if self.channel_lost:
            raise ChannelInvalidStateError("closed")
        return object()

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, *, requeue: bool) -> None:
        self.settled.append(f"nack requeue={requeue}")

    def incoming(self) -> AbstractIncomingMessage:
        return cast(AbstractIncomingMessage, self)


@dataclass
class Published:
    body: bytes
    exchange: str
    routing_key: str
    message_id: str | None
    headers: dict[str, Any]

    @property
    def jobs(self) -> list[Job]:
        return decode_jobs(self.body)

    @property
    def dead(self) -> tuple[Job, dict[str, Any]]:
        return decode_dead(self.body)


@dataclass
class Publisher:
    fail: bool = False
    published: list[Published] = field(default_factory=list)

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        headers: Any = None,
    ) -> None:
        if self.fail:
            raise BrokerUnavailable("no confirm")
        self.published.append(Published(body, exchange, routing_key, message_id, dict(headers or {})))

    def to(self, exchange: str) -> list[Published]:
        return [p for p in self.published if p.exchange == exchange]


@dataclass
class Recorder:
    """An event sink whose records are confirmed at once (or refused with `fail`)."""

    fail: bool = False
    records: list[AttemptRecord] = field(default_factory=list)

    def record(self, record: AttemptRecord) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(BrokerUnavailable("no confirm"))
        else:
            self.records.append(record)
            future.set_result(None)
        return future


class Queue:
    """The parts of an aio-pika queue the consumers and the probe use; `waiting` is what `get` hands out."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.consuming = False
        self.waiting: list[Message] = []
        self.events: list[str] = []

    async def consume(self, callback: Any, *, arguments: Any = None) -> str:
        self.consuming = True
        self.events.append("consume")
        return f"tag-{self.name}"

    async def cancel(self, tag: str, **options: Any) -> None:
        self.consuming = False
        self.events.append("cancel")

    async def get(self, **options: Any) -> AbstractIncomingMessage | None:
        return self.waiting.pop(0).incoming() if self.waiting else None


class Platform:
    """Answers each job with `answer(job)`; remembers what it was sent."""

    def __init__(self, answer: Callable[[Job], Result] | None = None, *, max_batch: int = 1) -> None:
        self.answer = answer or (lambda job: Result(Outcome.ACCEPTED, "ok"))
        self.max_batch = max_batch
        self.sent: list[Job] = []

    async def send(self, jobs: Sequence[Job], *, attempts: Sequence[int] = ()) -> list[Result]:
        self.sent.extend(jobs)
        return [self.answer(job) for job in jobs]

    async def aclose(self) -> None:
        return None


def settings(*, sites: dict[str, dict[str, Any]] | None = None, **worker: Any) -> Settings:
    """Sites a and b (http-json; `sites` adds to their options) and a quick breaker."""
    sites = sites or {}
    return load_settings(
        broker={"prefix": "unit"},
        sites={name: {"url": f"http://127.0.0.1:1/{name}", **sites.get(name, {})} for name in ("a", "b")},
        worker={"breaker_failure_threshold": 2, "breaker_cooldown_s": 0.05, **worker},
    )


@dataclass
class Rooms:
    """A worker of site `a` in pieces, wired as `workers.runtime` wires them, over the fakes above."""

    settings: Settings
    topology: Topology
    publisher: Publisher
    recorder: Recorder
    platform: Platform
    queues: dict[str, Queue]
    metrics: WorkerMetrics
    circuit: Circuit
    settlement: Settlement
    outcomes: Outcomes
    intake: Intake
    consumers: Consumers
    delivery: Delivery
    stop: asyncio.Event


def rooms(
    *,
    platform: Platform | None = None,
    publisher: Publisher | None = None,
    sites: dict[str, dict[str, Any]] | None = None,
    **worker: Any,
) -> Rooms:
    config = settings(sites=sites, **worker)
    topology = topology_from(config)
    publisher = publisher or Publisher()
    recorder = Recorder()
    platform = platform or Platform()
    metrics = WorkerMetrics(site="a")
    circuit = Circuit.for_settings(config.worker, site="a", metrics=metrics)
    settlement = Settlement(publisher=publisher, prefix="unit")
    outcomes = Outcomes(
        site="a",
        worker_id="host:1",
        settings=config.worker,
        topology=topology,
        publisher=publisher,
        recorder=recorder,
        settlement=settlement,
        circuit=circuit,
        metrics=metrics,
        segment_limits=config.segment_limits,
    )
    intake = Intake(settlement=settlement, outcomes=outcomes)
    queues = {site: Queue(f"unit.site.{site}") for site in ("a", "b")}
    consumers = Consumers.for_site(
        own=cast(AbstractQueue, queues["a"]),
        own_site="a",
        standby={"b": cast(AbstractQueue, queues["b"])},
        on_message=intake.receive,
    )
    stop = asyncio.Event()
    delivery = Delivery(
        site="a",
        platform=platform,
        settlement=settlement,
        outcomes=outcomes,
        circuit=circuit,
        consumers=consumers,
        metrics=metrics,
        stop=stop,
    )
    return Rooms(
        settings=config,
        topology=topology,
        publisher=publisher,
        recorder=recorder,
        platform=platform,
        queues=queues,
        metrics=metrics,
        circuit=circuit,
        settlement=settlement,
        outcomes=outcomes,
        intake=intake,
        consumers=consumers,
        delivery=delivery,
        stop=stop,
    )
