"""A worker's periodic state report on the heartbeat exchange (transient: only live readers care)."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractRobustConnection, DeliveryMode

from shared.envelope import CONTENT_TYPE, encode_heartbeat
from shared.logs import get_logger
from shared.model import CircuitState, Heartbeat

log = get_logger(__name__)


class Reporting(Protocol):
    """What a heartbeat reads from the worker."""

    site: str
    worker_id: str
    started_at: float

    @property
    def in_flight(self) -> int: ...

    @property
    def delivered_total(self) -> int: ...

    @property
    def failed_over_total(self) -> int: ...

    @property
    def circuit(self) -> CircuitState: ...

    @property
    def concurrency(self) -> int: ...

    @property
    def metrics_port(self) -> int: ...

    @property
    def platform_problem(self) -> str | None: ...


def heartbeat_of(worker: Reporting) -> Heartbeat:
    host, _, pid = worker.worker_id.rpartition(":")
    return Heartbeat(
        worker=worker.worker_id,
        host=host or socket.gethostname(),
        pid=int(pid),
        site=worker.site,
        circuit=worker.circuit,
        concurrency=worker.concurrency,
        in_flight=worker.in_flight,
        delivered_total=worker.delivered_total,
        failed_over_total=worker.failed_over_total,
        metrics_port=worker.metrics_port,
        started_at=worker.started_at,
        problem=worker.platform_problem,
    )


class HeartbeatSender:
    def __init__(
        self, *, connection: AbstractRobustConnection, exchange: str, interval_s: float, worker: Reporting
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._interval_s = interval_s
        self._worker = worker

    async def run(self) -> None:
        # Not mandatory and not confirmed: with no reader bound, a heartbeat is rightly dropped.
        channel = await self._connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(self._exchange_name, ensure=False)
        while True:
            try:
                body = encode_heartbeat(heartbeat_of(self._worker))
                await exchange.publish(
                    aio_pika.Message(
                        body, content_type=CONTENT_TYPE, delivery_mode=DeliveryMode.NOT_PERSISTENT
                    ),
                    routing_key="",
                    mandatory=False,
                )
            except Exception as exc:  # the broker may be away; the next beat tries again
                log.debug("heartbeat not sent", error=repr(exc))
            await asyncio.sleep(self._interval_s)
