"""The recorder: folds the workers' attempt events and dead letters into the store.

It consumes <prefix>.events and <prefix>.dead, gathers deliveries into batches, folds each batch in one
transaction and acks the batch only after the commit. A report it cannot read is logged, counted and
acked (a poison message must not stop the recorder); when the store fails, the batch is requeued.
"""

from __future__ import annotations

import asyncio
import contextlib

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.metrics import POSSIBLE_DUPLICATES, RECORDER_BATCHES, RECORDER_MALFORMED, RECORDER_RECORDS
from shared.envelope import decode_dead, decode_events
from shared.errors import EnvelopeError
from shared.logs import get_logger
from shared.model import AttemptRecord, Outcome
from shared.store.recording import DeadReport, fold
from shared.topology import dead_queue, events_queue

log = get_logger("ingress.recorder")

PREFETCH_COUNT = 300
BATCH_MAX = 200
FLUSH_INTERVAL_S = 0.05
STORE_RETRY_PAUSE_S = 1.0

EVENTS = "events"
DEAD = "dead"


class Recorder:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], prefix: str) -> None:
        self._sessions = sessions
        self._prefix = prefix
        self._buffer: list[tuple[str, AbstractIncomingMessage]] = []
        self._wake = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def start(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH_COUNT)
        for kind, name in ((EVENTS, events_queue(self._prefix)), (DEAD, dead_queue(self._prefix))):
            queue = await channel.get_queue(name, ensure=True)
            await queue.consume(self._receiver(kind), no_ack=False)
        self._channel = channel
        self._task = asyncio.create_task(self._flush_loop(), name="recorder")
        log.info("recorder consuming", events=events_queue(self._prefix), dead=dead_queue(self._prefix))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()  # unacked deliveries go back to their queues

    def _receiver(self, kind: str):  # type: ignore[no-untyped-def]
        async def receive(message: AbstractIncomingMessage) -> None:
            self._buffer.append((kind, message))
            if len(self._buffer) >= BATCH_MAX:
                self._wake.set()

        return receive

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._wake.wait()
            self._wake.clear()
            if not self._buffer:
                continue
            batch, self._buffer = self._buffer[:BATCH_MAX], self._buffer[BATCH_MAX:]
            if not await self._fold_batch(batch):
                await asyncio.sleep(STORE_RETRY_PAUSE_S)

    async def _fold_batch(self, batch: list[tuple[str, AbstractIncomingMessage]]) -> bool:
        events: list[AttemptRecord] = []
        dead: list[DeadReport] = []
        readable: list[AbstractIncomingMessage] = []
        for kind, message in batch:
            try:
                if kind == EVENTS:
                    events.extend(decode_events(message.body))
                else:
                    job, verdict = decode_dead(message.body)
                    dead.append(DeadReport.from_envelope(job, verdict))
            except (EnvelopeError, KeyError, TypeError, ValueError) as exc:
                RECORDER_MALFORMED.inc()
                log.error(
                    "unreadable report dropped",
                    queue=kind,
                    message_id=message.message_id,
                    error=str(exc),
                    size=len(message.body),
                )
                await _settle(message, ack=True)
                continue
            readable.append(message)
        if not readable:
            return True
        try:
            async with self._sessions.begin() as session:
                result = await fold(session, events=events, dead=dead)
        except Exception as exc:
            RECORDER_BATCHES.labels("failed").inc()
            log.warning("recorder could not write to the store; requeued", error=repr(exc), size=len(batch))
            for message in readable:
                await _settle(message, ack=False)
            return False
        for message in readable:
            await _settle(message, ack=True)
        self.batches += 1
        RECORDER_BATCHES.labels("ok").inc()
        RECORDER_RECORDS.labels("attempt").inc(result.attempts_added)
        RECORDER_RECORDS.labels("dead").inc(result.dead_added)
        POSSIBLE_DUPLICATES.inc(sum(1 for e in events if e.outcome is Outcome.AMBIGUOUS))
        return True


async def _settle(message: AbstractIncomingMessage, *, ack: bool) -> None:
    # A delivery of a channel lost meanwhile cannot be settled; the broker redelivers it, and the
    # fold is idempotent.
    with contextlib.suppress(Exception):
        if ack:
            await message.ack()
        else:
            await message.nack(requeue=True)
