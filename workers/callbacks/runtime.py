"""A callback worker process: consume callback jobs, POST each to its endpoint, settle it.

Every callback it holds ends in one of: acked after a 2xx or a 410; acked after its retry is confirmed
in the delay queue of its try (`<prefix>.callbacks.delay.<n>s`, whose TTL sends it back); acked after its
dead letter is committed to the store; or nacked back to its queue when none of that could be done (the
broker, or the store, away). So a callback is at least once, never lost.

A broker message holds one job or a bundle (the jobs of one recorder fold); each message is handled in a
task of its own, each of its jobs under its host's lane (`workers.callbacks.lanes`), and the message is
acked once every job has ended as above (nacked when one could not). A slow host holds at most its lane's
messages; the rest of the worker's prefetch serves the other hosts.
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
from shared.callbacks.wire import CallbackDeadReason, CallbackJob, decode_callbacks, encode_callback
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
# How long a callback waits in memory for its host's slot before it is put back for later: a bundle is
# acked only once each of its callbacks is settled, so this bounds how long a slow host keeps one unacked
# (well within the broker's consumer timeout, 30 minutes by default). Not shorter: under a burst to one
# healthy host, the prefetched bundles' callbacks wait in its lane for a while, and putting them back
# would cost each a retry tier's wait.
LANE_WAIT_S = 300.0


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
        self._lanes = Lanes(
            concurrency=self._cb.per_host_concurrency,
            waiting=self._cb.per_host_waiting,
            wait_s=LANE_WAIT_S,
        )
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
            jobs = decode_callbacks(message.body)
        except EnvelopeError as exc:
            log.error("unreadable callback dropped", error=str(exc), message_id=message.message_id)
            await settle(message, ack=True)
            return
        before = _attempts(message)
        # Each job of a bundle ends on its own; the message is acked once every one has.
        tries = (self._try(job, before, message) for job in jobs)
        done = await asyncio.gather(*tries, return_exceptions=True)
        failed = [(job, e) for job, e in zip(jobs, done, strict=True) if isinstance(e, BaseException)]
        if failed:
            # Neither its retry nor its dead letter could be made durable: it goes back to its queue (the
            # bundle's other jobs with it, sent again under the same event ids).
            first, error = failed[0]
            log.warning(
                "callback not settled; back to its queue",
                event_id=first.event_id,
                failed=len(failed),
                of=len(jobs),
                error=repr(error),
            )
            await settle(message, ack=False)
            return
        await settle(message, ack=True)

    async def _try(self, job: CallbackJob, before: int, message: AbstractIncomingMessage) -> None:
        """One try of `job` and what follows it: done, stopped, its retry published, or its dead letter
        recorded; raises when its retry or dead letter could not be made durable."""
        try:
            # The message is alive, so its id is its own, as long as its jobs hold the lane.
            async with self._lanes.slot(host_of(job.url), id(message)):
                secrets = await self._secrets.of(job.tenant)
                started = time.perf_counter()
                tried = await self._sender.send(job, secrets)
                self.metrics.duration.observe(time.perf_counter() - started)
        except LaneFull:
            # Its host is busy with its own callbacks: back later, and not counted as a try.
            self.metrics.lane_full.inc()
            await self._later(job, before, min(self._cb.retry_delays_s))
            return
        attempt = before + 1
        if tried.refused:
            self.metrics.tried(TryResult.REFUSED_ADDRESS)
            await self._dead.record(asdict(job), CallbackDeadReason.ADDRESS_REFUSED, tried.detail, attempt)
            log.warning("callback refused at send time", event_id=job.event_id, detail=tried.detail)
            return
        decision = decide(
            tried.status_code,
            attempt=attempt,
            max_attempts=self._cb.max_attempts,
            retry_delays_s=self._cb.retry_delays_s,
        )
        self.metrics.tried(_RESULTS[decision.next])
        if decision.next is Next.RETRY:
            await self._later(job, attempt, decision.delay_s)
        elif decision.next is Next.DEAD:
            await self._dead.record(asdict(job), CallbackDeadReason.ATTEMPTS_EXHAUSTED, tried.detail, attempt)
            log.warning("callback dead", event_id=job.event_id, attempts=attempt, detail=tried.detail)
        elif decision.next is Next.GONE:
            log.info("callback refused for good by its endpoint (410)", event_id=job.event_id)

    async def _later(self, job: CallbackJob, attempts: int, delay_s: int) -> None:
        """`job` on its own, confirmed in the delay queue of its try."""
        await self._publisher.publish(
            encode_callback(job),
            exchange="",
            routing_key=callback_delay_queue(self._prefix, delay_s),
            message_id=job.event_id,
            headers={H_CALLBACK_ATTEMPT: attempts},
        )

    async def _parked(self, message: AbstractIncomingMessage) -> None:
        """Callbacks the broker redelivered past its limit: dead callbacks, replayable."""
        try:
            jobs = decode_callbacks(message.body)
        except EnvelopeError as exc:
            log.error("unreadable parked callback dropped", error=str(exc))
            await settle(message, ack=True)
            return
        detail = "redelivered past the broker's delivery limit without an outcome"
        try:
            for job in jobs:
                await self._dead.record(
                    asdict(job), CallbackDeadReason.REDELIVERY_LIMIT, detail, _attempts(message)
                )
        except Exception as exc:
            log.warning("parked callback not recorded; back to its queue", error=repr(exc))
            await settle(message, ack=False)
            await asyncio.sleep(1.0)
            return
        await settle(message, ack=True)
