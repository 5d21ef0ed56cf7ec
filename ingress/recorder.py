"""The recorder: folds the workers' attempt events and dead letters into the store.

It consumes <prefix>.events and <prefix>.dead, gathers deliveries into batches, folds each batch in one
transaction and acks the batch only after the commit. A report it cannot read is logged, counted and
acked (a poison message must not stop the recorder); when the store is away, the batch is held unacked
and tried again, so its delivery count does not grow (the broker parks a message redelivered
`broker.delivery_limit` times). It also consumes <prefix>.parked (`ingress.parked`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.metrics import POSSIBLE_DUPLICATES, RECORDER_BATCHES, RECORDER_MALFORMED, RECORDER_RECORDS
from ingress.parked import parked_reports
from shared.envelope import decode_dead, decode_events
from shared.errors import EnvelopeError
from shared.logs import get_logger
from shared.model import AttemptRecord
from shared.store.recording import DeadReport, fold
from shared.topology import dead_queue, events_queue, parked_queue

log = get_logger("ingress.recorder")

PREFETCH_COUNT = 300
BATCH_MAX = 200
FLUSH_INTERVAL_S = 0.05
STORE_RETRY_PAUSE_S = 1.0

MESSAGE_ID_CHARS = 32
SITE_CHARS = 64
TENANT_CHARS = 64

EVENTS = "events"
DEAD = "dead"
PARKED = "parked"


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
        p = self._prefix
        for kind, name in ((EVENTS, events_queue(p)), (DEAD, dead_queue(p)), (PARKED, parked_queue(p))):
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
        readable: list[Report] = []
        for kind, message in batch:
            try:
                readable.append(_decode(kind, message))
            except (EnvelopeError, KeyError, TypeError, ValueError) as exc:
                await _drop(message, kind=kind, error=str(exc))
        if not readable:
            return True
        try:
            await self._apply(readable)
        except Exception as exc:
            if _store_away(exc):
                RECORDER_BATCHES.labels("failed").inc()
                log.warning(
                    "recorder could not write to the store; holding", error=repr(exc), size=len(batch)
                )
                self._hold(readable)
                return False
            # The store is there but refuses something in the batch: find it, keep the rest.
            return await self._fold_one_by_one(readable)
        for report in readable:
            await _settle(report.message, ack=True)
        return True

    async def _fold_one_by_one(self, reports: list[Report]) -> bool:
        for report in reports:
            try:
                await self._apply([report])
            except Exception as exc:
                if _store_away(exc):
                    RECORDER_BATCHES.labels("failed").inc()
                    self._hold(reports[reports.index(report) :])
                    return False
                await _drop(report.message, kind=report.kind, error=f"the store refuses it: {exc!r}")
                continue
            await _settle(report.message, ack=True)
        return True

    def _hold(self, reports: list[Report]) -> None:
        """Keep these unacked, first in line for the next try: a nack would requeue them and count a
        delivery each time. Those of a channel lost meanwhile are left out; the broker redelivers them."""
        self._buffer[:0] = [(r.kind, r.message) for r in reports if not _stale(r.message)]

    async def _apply(self, reports: list[Report]) -> None:
        events = [e for r in reports for e in r.events]
        dead = [d for r in reports for d in r.dead]
        async with self._sessions.begin() as session:
            result = await fold(session, events=events, dead=dead)
        self.batches += 1
        RECORDER_BATCHES.labels("ok").inc()
        RECORDER_RECORDS.labels("attempt").inc(result.attempts_added)
        RECORDER_RECORDS.labels("dead").inc(result.dead_added)
        POSSIBLE_DUPLICATES.inc(sum(1 for e in events if e.marks_duplicate))


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    kind: str
    message: AbstractIncomingMessage
    events: list[AttemptRecord] = field(default_factory=list)
    dead: list[DeadReport] = field(default_factory=list)


def _decode(kind: str, message: AbstractIncomingMessage) -> Report:
    if kind == PARKED:
        events, dead = parked_reports(message)
        return Report(kind=kind, message=message, events=events, dead=dead)
    if kind == EVENTS:
        events = decode_events(message.body)
        for record in events:
            _check_sizes(message_id=record.message_id, site=record.site)
        return Report(kind=kind, message=message, events=events)
    job, verdict = decode_dead(message.body)
    report = DeadReport.from_envelope(job, verdict)
    _check_sizes(message_id=job.id, site=report.site, tenant=job.tenant)
    return Report(kind=kind, message=message, dead=[report])


def _check_sizes(*, message_id: str, site: str, tenant: str = "") -> None:
    # Column widths of the store: a longer value would fail the whole batch on PostgreSQL.
    if not 0 < len(message_id) <= MESSAGE_ID_CHARS or len(site) > SITE_CHARS or len(tenant) > TENANT_CHARS:
        raise ValueError("message id, site or tenant too long for the store")


def _store_away(exc: BaseException) -> bool:
    """The store could not be reached or was busy (retry later), as opposed to refusing the data."""
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


async def _drop(message: AbstractIncomingMessage, *, kind: str, error: str) -> None:
    RECORDER_MALFORMED.inc()
    log.error(
        "unreadable report dropped",
        queue=kind,
        message_id=message.message_id,
        error=error,
        size=len(message.body),
    )
    await _settle(message, ack=True)


def _stale(message: AbstractIncomingMessage) -> bool:
    try:
        _ = message.channel
    except ChannelInvalidStateError:
        return True
    return False


async def _settle(message: AbstractIncomingMessage, *, ack: bool) -> None:
    # A delivery of a channel lost meanwhile cannot be settled; the broker redelivers it, and the
    # fold is idempotent.
    with contextlib.suppress(Exception):
        if ack:
            await message.ack()
        else:
            await message.nack(requeue=True)
