"""One worker process of a site's pool: consume, deliver to the site's platform, settle every job.

Every job a worker holds ends in exactly one of: acked after its outcome is durable elsewhere (the
attempt record confirmed; a retry, hand-over or dead letter confirmed), or nacked back to its queue
unsent. Nothing is acked before what replaces it is confirmed by the broker.

`await Worker.start(...)` connects, declares the topology and starts consuming; `run()` then delivers until
`request_stop()` and shuts down within `worker.grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from shared.broker import ConfirmedPublisher, connect
from shared.errors import ConfigError
from shared.gc_tuning import freeze_startup_objects
from shared.logs import get_logger
from shared.model import CircuitState
from shared.settings import Settings
from shared.topology import (
    Topology,
    bulk_queue,
    declare,
    events_exchange,
    heartbeat_exchange,
    site_queue,
    topology_from,
)
from workers.circuit import Circuit
from workers.consumers import Consumers
from workers.delivery import Delivery
from workers.events import EventSink, ReportPublisher
from workers.heartbeat import HeartbeatSender
from workers.intake import Intake
from workers.metrics import WorkerMetrics
from workers.outcomes import Outcomes, Totals
from workers.platforms.base import Platform
from workers.settlement import Settlement
from workers.supervisor import CircuitSupervisor

log = get_logger(__name__)

# Most messages one consumer holds (each carries one job, or a bundle of up to `ingress.bundle_max`).
# Batching platforms want several full requests' worth; more only floods the event loop with deliveries
# and delays the publisher confirms the acks wait for.
MAX_PREFETCH = 500
# Time kept back from the grace period to flush events and close the connection.
CLOSE_MARGIN_S = 0.5


def prefetch_counts(settings: Settings, *, concurrency: int, max_batch: int) -> tuple[int, int]:
    """The prefetch of the own queue's consumer and of the standby consumers."""
    # One request slot can carry a whole batch, so a batching platform gets full requests.
    own = max(concurrency, min(concurrency * max_batch, MAX_PREFETCH))
    return own, settings.worker.standby_prefetch_count or own


@dataclass(frozen=True, slots=True, kw_only=True)
class Rooms:
    """A worker's parts, wired to one another on an open connection."""

    connection: AbstractRobustConnection
    sink: EventSink
    circuit: Circuit
    settlement: Settlement
    totals: Totals
    intake: Intake
    consumers: Consumers
    delivery: Delivery


class Worker:
    """A started worker; made by `Worker.start`, which hands it its parts ready to run."""

    def __init__(
        self,
        *,
        site: str,
        worker_id: str,
        settings: Settings,
        platform: Platform,
        rooms: Rooms,
        stop: asyncio.Event,
        concurrency: int,
        metrics_port: int,
    ) -> None:
        self.site = site
        self.worker_id = worker_id
        self.started_at = time.time()
        self._settings = settings
        self._platform = platform
        self._connection = rooms.connection
        self._sink = rooms.sink
        self._circuit = rooms.circuit
        self._settlement = rooms.settlement
        self._intake = rooms.intake
        self._consumers = rooms.consumers
        self._delivery = rooms.delivery
        self._totals = rooms.totals
        self._stop = stop
        self._concurrency = concurrency
        self._metrics_port = metrics_port
        self._max_batch = max(1, platform.max_batch)
        self.own_prefetch_count, self.standby_prefetch_count = prefetch_counts(
            settings, concurrency=concurrency, max_batch=self._max_batch
        )
        self._supervisor = CircuitSupervisor(
            circuit=rooms.circuit,
            consumers=rooms.consumers,
            intake=rooms.intake,
            delivery=rooms.delivery,
            stop=stop,
            site=site,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        *,
        settings: Settings,
        site: str,
        platform: Platform,
        concurrency: int | None = None,
        metrics: WorkerMetrics | None = None,
        metrics_port: int = 0,
        stop: asyncio.Event | None = None,
    ) -> Worker:
        """Connect, declare the topology and start consuming. `stop` (or `request_stop()`) ends `run()`;
        one set before the start is over still lets the start finish, and `run()` then stops at once."""
        if site not in settings.sites:
            raise ConfigError(f"unknown site {site!r}: configured sites are {settings.site_names}")
        metrics = metrics or WorkerMetrics(site=site)
        metrics.serve(metrics_port)
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        concurrency = concurrency or settings.worker.concurrency
        stop = stop or asyncio.Event()
        connection: AbstractRobustConnection | None = None
        try:
            connection = await connect(settings.broker, name=f"relay-worker-{site} {worker_id}")
            rooms = await _assemble(
                connection,
                settings=settings,
                site=site,
                worker_id=worker_id,
                platform=platform,
                concurrency=concurrency,
                metrics=metrics,
                stop=stop,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await platform.aclose()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=CLOSE_MARGIN_S)
            raise
        worker = cls(
            site=site,
            worker_id=worker_id,
            settings=settings,
            platform=platform,
            rooms=rooms,
            stop=stop,
            concurrency=concurrency,
            metrics_port=metrics_port,
        )
        metrics.watch_problem(lambda: worker.platform_problem)
        try:
            await worker._begin()
        except BaseException:
            await worker._shutdown()
            raise
        return worker

    # -- what a heartbeat reports ----------------------------------------------------------------

    @property
    def circuit(self) -> CircuitState:
        return self._circuit.state

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def metrics_port(self) -> int:
        return self._metrics_port

    @property
    def platform_problem(self) -> str | None:
        """What the adapter knows of why its platform takes nothing (a refused bind, bad credentials)."""
        problem: str | None = getattr(self._platform, "problem", None)
        return problem

    @property
    def in_flight(self) -> int:
        return self._settlement.in_flight

    @property
    def delivered_total(self) -> int:
        return self._totals.delivered

    @property
    def failed_over_total(self) -> int:
        return self._totals.failed_over

    # -- running and stopping --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM): the caller's `run()` returns within `worker.grace_s`."""
        self._stop.set()

    async def run(self) -> None:
        """Deliver until `request_stop()`; then hand back or finish what is held and return."""
        try:
            await self._stop.wait()
        finally:
            await self._shutdown()

    async def _begin(self) -> None:
        beats = HeartbeatSender(
            connection=self._connection,
            exchange=heartbeat_exchange(self._settings.broker.prefix),
            interval_s=self._settings.worker.heartbeat_interval_s,
            worker=self,
        )
        self._sink.start()
        self._tasks = [
            asyncio.create_task(self._runner(), name=f"runner-{i}") for i in range(self._concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._supervisor.run(), name="circuit"))
        self._tasks.append(asyncio.create_task(beats.run(), name="heartbeat"))
        freeze_startup_objects()
        await self._consumers.start()
        log.info(
            "worker started",
            site=self.site,
            concurrency=self._concurrency,
            max_batch=self._max_batch,
            prefetch_count=self.own_prefetch_count,
            standby_prefetch_count=self.standby_prefetch_count,
            worker=self.worker_id,
        )

    async def _runner(self) -> None:
        while True:
            batch = await self._intake.next_batch(max_batch=self._max_batch)
            try:
                await self._delivery.run(batch)
            except Exception:
                log.exception("delivery failed unexpectedly", site=self.site, jobs=len(batch))

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self._settings.worker.grace_s - CLOSE_MARGIN_S
        self._stop.set()
        self._circuit.wake.set()
        log.info("worker stopping", site=self.site, in_flight=self.in_flight)
        await self._consumers.cancel()
        await self._hand_back_waiting()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_idle(), timeout=max(0.0, deadline - time.monotonic()))
        if self._delivery.busy:
            # Sends still without an answer stay unacked: the broker redelivers them when we disconnect.
            log.warning("grace period over with sends in flight", busy=self._delivery.busy)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._hand_back_waiting()  # what runners cancelled mid-linger put back
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sink.close(), timeout=max(0.1, CLOSE_MARGIN_S))
        with contextlib.suppress(Exception):
            await self._platform.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._connection.close(), timeout=CLOSE_MARGIN_S)
        log.info("worker stopped", site=self.site, delivered_total=self.delivered_total)

    async def _hand_back_waiting(self) -> None:
        await self._delivery.hand_back_all(self._intake.take_all())

    async def _wait_idle(self) -> None:
        while self._delivery.busy or not self._intake.empty():
            await self._hand_back_waiting()
            self._delivery.idle.clear()
            if self._delivery.busy:
                await self._delivery.idle.wait()
            else:
                await asyncio.sleep(0.01)


async def _assemble(
    connection: AbstractRobustConnection,
    *,
    settings: Settings,
    site: str,
    worker_id: str,
    platform: Platform,
    concurrency: int,
    metrics: WorkerMetrics,
    stop: asyncio.Event,
) -> Rooms:
    """A worker's parts on an open connection, each handed the ones it works with."""
    topology = topology_from(settings)
    publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=settings.worker.confirm_timeout_s)
    await declare(publisher.channel, topology)
    prefetch = prefetch_counts(settings, concurrency=concurrency, max_batch=max(1, platform.max_batch))
    own, standby, bulk = await _site_queues(connection, topology, site=site, prefetch=prefetch)
    circuit = Circuit.for_settings(settings.worker, site=site, metrics=metrics)
    settlement = Settlement(publisher=publisher, prefix=topology.prefix)
    # Read at each scrape rather than set at each job: a gauge's set takes a lock, twice per job.
    metrics.in_flight.labels(site=site).set_function(lambda: settlement.in_flight)
    sink = EventSink(publisher=publisher, exchange=events_exchange(topology.prefix))
    _receipts_to_broker(platform, site=site, publisher=publisher, prefix=topology.prefix)
    outcomes = Outcomes(
        site=site,
        worker_id=worker_id,
        settings=settings.worker,
        topology=topology,
        publisher=publisher,
        recorder=sink,
        settlement=settlement,
        circuit=circuit,
        metrics=metrics,
        segment_limits=settings.segment_limits,
    )
    intake = Intake(settlement=settlement, outcomes=outcomes)
    consumers = Consumers.for_site(
        own=own, own_site=site, standby=standby, on_message=intake.receive, bulk=bulk
    )
    delivery = Delivery(
        site=site,
        platform=platform,
        settlement=settlement,
        outcomes=outcomes,
        circuit=circuit,
        consumers=consumers,
        metrics=metrics,
        stop=stop,
    )
    return Rooms(
        connection=connection,
        sink=sink,
        circuit=circuit,
        settlement=settlement,
        totals=outcomes.totals,
        intake=intake,
        consumers=consumers,
        delivery=delivery,
    )


def _receipts_to_broker(platform: Platform, *, site: str, publisher: ConfirmedPublisher, prefix: str) -> None:
    """A platform that reports on its own session (SMPP receipts) publishes them, confirmed."""
    report_to = getattr(platform, "report_to", None)
    if report_to is not None:
        report_to(site=site, sink=ReportPublisher(publisher=publisher, prefix=prefix).publish)


async def _site_queues(
    connection: AbstractRobustConnection,
    topology: Topology,
    *,
    site: str,
    prefetch: tuple[int, int],
) -> tuple[AbstractQueue, dict[str, AbstractQueue], dict[str, AbstractQueue]]:
    """The site's own queue, and the other sites' queues on a channel of their own, each with its
    prefetch (own, standby); every site's bulk queue likewise, on the channel of its site's kind."""
    own_prefetch, standby_prefetch = prefetch
    own_channel = await connection.channel()
    await own_channel.set_qos(prefetch_count=own_prefetch)
    standby_channel = await connection.channel()
    await standby_channel.set_qos(prefetch_count=standby_prefetch)
    own = await _queue(own_channel, topology, site)
    standby = {
        other: await _queue(standby_channel, topology, other) for other in topology.sites if other != site
    }
    bulk = {
        each: await _queue(own_channel if each == site else standby_channel, topology, each, bulk=True)
        for each in topology.sites
    }
    return own, standby, bulk


async def _queue(
    channel: AbstractChannel, topology: Topology, site: str, *, bulk: bool = False
) -> AbstractQueue:
    name = (bulk_queue if bulk else site_queue)(topology.prefix, site)
    spec = next(s for s in topology.queues() if s.name == name)
    return await channel.declare_queue(name, durable=True, arguments=spec.arguments)
