"""The ingress's connection to RabbitMQ: connects in the background, declares the topology, and
knows whether a publish can be confirmed right now (when it cannot, submits go to the spool at once
instead of waiting out the confirm timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from shared.broker import RECONNECT_INTERVAL_S, ConfirmedPublisher, Fate, Verdict, connect
from shared.broker_settings import BrokerSettings
from shared.errors import RelayError
from shared.logs import get_logger
from shared.topology import Topology, declare, jobs_exchange, reports_exchange

log = get_logger("ingress.broker")

NOT_CONNECTED = Verdict(Fate.NOT_TAKEN, "not connected to the broker")


class BrokerLink:
    def __init__(self, *, settings: BrokerSettings, topology: Topology, name: str) -> None:
        self._settings = settings
        self._topology = topology
        self._name = name
        self._exchange = jobs_exchange(topology.prefix)
        self.connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._available = False
        self._connector: asyncio.Task[None] | None = None
        self._on_ready: list[Callable[[AbstractRobustConnection], Awaitable[None]]] = []
        self.ready = asyncio.Event()  # set once: the first successful connect and declare

    @property
    def available(self) -> bool:
        return self._available and self._publisher is not None

    def on_ready(self, callback: Callable[[AbstractRobustConnection], Awaitable[None]]) -> None:
        """Run `callback` once the first connection is up (at once when it is up already)."""
        self._on_ready.append(callback)

    async def start(self) -> None:
        """Connect now if the broker answers; otherwise keep trying in the background."""
        if not await self._connect_once():
            self._connector = asyncio.create_task(self._connect_loop(), name="broker-connector")

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        self._available = False
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()

    async def publish_job(
        self, *, body: bytes, site: str, message_id: str, headers: dict[str, Any]
    ) -> Verdict:
        """The broker's verdict on a persistent job message, awaited for as long as it may still come
        (see `ConfirmedPublisher.send`); not taken at once when no connection is up."""
        publisher = self._publisher
        if publisher is None or not self._available:
            return NOT_CONNECTED
        return await publisher.send(
            body,
            exchange=self._exchange,
            routing_key=site,
            message_id=message_id,
            headers=headers,
            channel_timeout_s=self._settings.confirm_timeout_s,
        )

    async def publish_reports(self, body: bytes) -> Verdict:
        """The broker's verdict on a persistent message of delivery reports (see `publish_job`)."""
        publisher = self._publisher
        if publisher is None or not self._available:
            return NOT_CONNECTED
        return await publisher.send(
            body,
            exchange=reports_exchange(self._topology.prefix),
            routing_key="",
            channel_timeout_s=self._settings.confirm_timeout_s,
        )

    async def _connect_loop(self) -> None:
        connected = False
        while not connected:
            await asyncio.sleep(RECONNECT_INTERVAL_S)
            connected = await self._connect_once()

    async def _connect_once(self) -> bool:
        try:
            connection = await connect(self._settings, name=self._name)
        except RelayError as exc:
            log.warning("broker unreachable, spooling until it answers", error=str(exc))
            return False
        try:
            channel = await connection.channel()
            await declare(channel, self._topology)
            await channel.close()
            publisher = await ConfirmedPublisher.open(
                connection, confirm_timeout_s=self._settings.confirm_timeout_s
            )
        except Exception as exc:
            log.warning("broker connected but topology declare failed", error=repr(exc))
            with contextlib.suppress(Exception):
                await connection.close()
            return False
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._back)
        self.connection = connection
        self._publisher = publisher
        self._available = True
        self.ready.set()
        log.info("broker connected", prefix=self._topology.prefix)
        for callback in self._on_ready:
            try:
                await callback(connection)
            except Exception as exc:
                log.error("broker ready callback failed", error=repr(exc))
        return True

    def _lost(self, *_: Any) -> None:
        if self._available:
            log.warning("broker connection lost, spooling")
        self._available = False

    def _back(self, *_: Any) -> None:
        log.info("broker connection restored")
        self._available = True
