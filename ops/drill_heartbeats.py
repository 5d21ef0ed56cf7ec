"""Workers as their heartbeats show them: which processes serve a site, and when new ones appear."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from types import TracebackType

import psutil
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection, ExchangeType

from shared.broker import connect
from shared.broker_settings import BrokerSettings
from shared.envelope import decode_heartbeat
from shared.errors import EnvelopeError
from shared.model import CircuitState, Heartbeat
from shared.topology import heartbeat_exchange


class HeartbeatWatcher:
    """Listens on the heartbeat exchange through an exclusive, auto-deleted queue of its own."""

    def __init__(self, *, broker: BrokerSettings) -> None:
        self._broker = broker
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self.latest: dict[str, Heartbeat] = {}  # worker "<host>:<pid>" -> its last heartbeat
        self.first_seen: dict[str, float] = {}  # worker -> when its first heartbeat arrived here
        self._changed = asyncio.Event()

    async def __aenter__(self) -> HeartbeatWatcher:
        self._connection = await connect(self._broker, name="relay-drill-heartbeats")
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            heartbeat_exchange(self._broker.prefix), ExchangeType.FANOUT, durable=True
        )
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(exchange)
        await self._queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            beat = decode_heartbeat(message.body)
        except EnvelopeError:
            return
        self.first_seen.setdefault(beat.worker, time.time())
        self.latest[beat.worker] = beat
        self._changed.set()

    def local_workers(self, site: str) -> list[Heartbeat]:
        """Workers of `site` on this host (the only ones the drill may signal)."""
        host = socket.gethostname()
        return [b for b in self.latest.values() if b.site == site and b.host == host]

    async def wait_for(
        self, site: str, *, timeout_s: float, excluding_pids: frozenset[int] = frozenset()
    ) -> Heartbeat:
        """The first heartbeat of a local worker of `site` whose pid is not excluded."""
        return await self._wait(
            lambda: next((b for b in self.local_workers(site) if b.pid not in excluding_pids), None),
            site=site,
            timeout_s=timeout_s,
        )

    async def wait_for_consuming(self, site: str, *, since: float, timeout_s: float) -> Heartbeat:
        """A heartbeat sent after `since` by a worker of `site` (any host) whose breaker lets it consume."""
        return await self._wait(
            lambda: next(
                (
                    b
                    for b in self.latest.values()
                    if b.site == site and b.at >= since and b.circuit is not CircuitState.OPEN
                ),
                None,
            ),
            site=site,
            timeout_s=timeout_s,
        )

    async def _wait(self, find: Callable[[], Heartbeat | None], *, site: str, timeout_s: float) -> Heartbeat:
        deadline = time.monotonic() + timeout_s
        while True:
            beat = find()
            if beat is not None:
                return beat
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no heartbeat of a worker of site {site!r} within {timeout_s} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    def kill_site(self, site: str, *, max_age_s: float) -> list[int]:
        """SIGKILL every local worker of `site` that sent a heartbeat in the last `max_age_s`.

        A pid is signalled only while its process still looks like a relay worker, so a pid reused by
        another program after a worker's death is left alone.
        """
        killed = []
        now = time.time()
        for beat in self.local_workers(site):
            self.latest.pop(beat.worker, None)
            if now - beat.at > max_age_s or not _is_worker_process(beat.pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(beat.pid, signal.SIGKILL)
                killed.append(beat.pid)
        return killed


def _is_worker_process(pid: int) -> bool:
    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "worker" in command
