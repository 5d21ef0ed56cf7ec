"""A callback worker process: consume callback jobs, POST each to its endpoint, settle it.

Every callback it holds ends in one of: acked after a 2xx or a 410; acked after its retry is confirmed
in the delay queue of its try (`<prefix>.callbacks.delay.<n>s`, whose TTL sends it back); acked after its
dead letter is committed to the store; or nacked back to its queue when none of that could be done (the
broker, or the store, away). So a callback is at least once, never lost.

Each job is handled in a task of its own, under its host's lane (`workers.callbacks.lanes`): a slow host
holds at most its lane's callbacks; the rest of the worker's prefetch serves the other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import asdict
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.broker import ConfirmedPublisher, connect, settle
from shared.callbacks.wire import CallbackDeadReason, CallbackJob, decode_callback
from shared.envelope import H_CALLBACK_ATTEMPT
from shared.errors import EnvelopeError
from shared.logs import get_logger
from shared.settings import Settings
from shared.store.engine import make_engine, make_sessionmaker
from shared.topology import (
    callback_delay_queue,
    callbacks_queue,
    declare,
    parked_callbacks_queue,
    topology_from,
)
from workers.callbacks.lanes import LaneFull, Lanes
from workers.callbacks.metrics import CallbackMetrics, TryResult
from workers.callbacks.policy import Next, decide
from workers.callbacks.secrets import DeadCallbacks, SecretCache
from workers.callbacks.sender import Sender, host_of

log = get_logger("workers.callbacks")

GRACE_S = 5.0


def _attempts(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(H_CALLBACK_ATTEMPT, 0)
    return value if isinstance(value, int) and value >= 0 else 0


_RESULTS = {
    Next.DONE: TryResult.OK,
    Next.GONE: TryResult.GONE,
    Next.RETRY: TryResult.RETRY,
    Next.DEAD: TryResult.DEAD,
}


class CallbackWorker:
    def __init__(
        self,
        *,
        settings: Settings,
        connection: AbstractRobustConnection,
        publisher: ConfirmedPublisher,
        engine: AsyncEngine,
        stop: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._cb = settings.callbacks
        self._prefix = settings.broker.prefix
        self._connection = connection
        self._publisher = publisher
        self._engine = engine
        sessions = make_sessionmaker(engine)
        self._secrets = SecretCache(sessions, overlap_s=self._cb.secret_overlap_s)
        self._dead = DeadCallbacks(sessions)
        self._sender = Sender(self._cb)
        self._lanes = Lanes(concurrency=self._cb.per_host_concurrency, waiting=self._cb.per_host_waiting)
        self.metrics = CallbackMetrics(lanes=self._lanes.occupancy)
        self._stop = stop
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: list[tuple[AbstractQueue, str]] = []
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    async def start(cls, *, settings: Settings, stop: asyncio.Event, metrics_port: int = 0) -> CallbackWorker:
        connection = await connect(settings.broker, name=f"relay-callbacks {socket.gethostname()}")
        publisher = await ConfirmedPublisher.open(
            connection, confirm_timeout_s=settings.callbacks.confirm_timeout_s
        )
        await declare(publisher.channel, topology_from(settings))
        worker = cls(
            settings=settings,
            connection=connection,
            publisher=publisher,
            engine=make_engine(settings.store),
            stop=stop,
        )
        worker.metrics.serve(metrics_port)
        await worker._consume()
        return worker

    async def _consume(self) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._cb.concurrency)
        p = self._prefix
        for name, handler in ((callbacks_queue(p), self._handle), (parked_callbacks_queue(p), self._parked)):
            queue = await channel.get_queue(name, ensure=True)
            tag = await queue.consume(self._spawner(handler), no_ack=False)
            self._queues.append((queue, tag))
        log.info("callback worker consuming", queue=callbacks_queue(p), worker=self.worker_id)

    def _spawner(self, handler: Any) -> Any:
        async def spawn(message: AbstractIncomingMessage) -> None:
            task = asyncio.create_task(handler(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return spawn

    async def run(self) -> None:
        await self._stop.wait()
        for queue, tag in self._queues:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._tasks:
            # What is not settled by then goes back to the queue with the connection.
            await asyncio.wait(set(self._tasks), timeout=GRACE_S)
        await self._sender.close()
        with contextlib.suppress(Exception):
            await self._connection.close()
        await self._engine.dispose()
        log.info("callback worker stopped", worker=self.worker_id)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = decode_callback(message.body)
        except EnvelopeError as exc:
            log.error("unreadable callback dropped", error=str(exc), message_id=message.message_id)
            await settle(message, ack=True)
            return
        try:
            await self._try(message, job, _attempts(message))
        except Exception as exc:
            # Neither its retry nor its dead letter could be made durable: it goes back to its queue.
            log.warning("callback not settled; back to its queue", event_id=job.event_id, error=repr(exc))
            await settle(message, ack=False)

    async def _try(self, message: AbstractIncomingMessage, job: CallbackJob, before: int) -> None:
        try:
            async with self._lanes.slot(host_of(job.url)):
                secrets = await self._secrets.of(job.tenant)
                started = time.perf_counter()
                tried = await self._sender.send(job, secrets)
                self.metrics.duration.observe(time.perf_counter() - started)
        except LaneFull:
            # Its host is busy with its own callbacks: back later, and not counted as a try.
            self.metrics.lane_full.inc()
            await self._later(message, job, before, min(self._cb.retry_delays_s))
            return
        attempt = before + 1
        if tried.refused:
            self.metrics.tried(TryResult.REFUSED_ADDRESS)
            await self._dead.record(asdict(job), CallbackDeadReason.ADDRESS_REFUSED, tried.detail, attempt)
            log.warning("callback refused at send time", event_id=job.event_id, detail=tried.detail)
            await settle(message, ack=True)
            return
        decision = decide(
            tried.status_code,
            attempt=attempt,
            max_attempts=self._cb.max_attempts,
            retry_delays_s=self._cb.retry_delays_s,
        )
        self.metrics.tried(_RESULTS[decision.next])
        if decision.next is Next.RETRY:
            await self._later(message, job, attempt, decision.delay_s)
            return
        if decision.next is Next.DEAD:
            await self._dead.record(asdict(job), CallbackDeadReason.ATTEMPTS_EXHAUSTED, tried.detail, attempt)
            log.warning("callback dead", event_id=job.event_id, attempts=attempt, detail=tried.detail)
        elif decision.next is Next.GONE:
            log.info("callback refused for good by its endpoint (410)", event_id=job.event_id)
        await settle(message, ack=True)

    async def _later(
        self, message: AbstractIncomingMessage, job: CallbackJob, attempts: int, delay_s: int
    ) -> None:
        await self._publisher.publish(
            message.body,
            exchange="",
            routing_key=callback_delay_queue(self._prefix, delay_s),
            message_id=job.event_id,
            headers={H_CALLBACK_ATTEMPT: attempts},
        )
        await settle(message, ack=True)

    async def _parked(self, message: AbstractIncomingMessage) -> None:
        """A callback the broker redelivered past its limit: a dead callback, replayable."""
        try:
            job = decode_callback(message.body)
        except EnvelopeError as exc:
            log.error("unreadable parked callback dropped", error=str(exc))
            await settle(message, ack=True)
            return
        detail = "redelivered past the broker's delivery limit without an outcome"
        try:
            await self._dead.record(
                asdict(job), CallbackDeadReason.REDELIVERY_LIMIT, detail, _attempts(message)
            )
        except Exception as exc:
            log.warning("parked callback not recorded; back to its queue", error=repr(exc))
            await settle(message, ack=False)
            await asyncio.sleep(1.0)
            return
        await settle(message, ack=True)
