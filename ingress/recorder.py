"""The recorder: folds the workers' attempt events and dead letters, and the platforms' delivery reports,
into the store.

It consumes <prefix>.events, <prefix>.dead and <prefix>.reports, gathers deliveries into batches, folds
each batch in one transaction and acks the batch only after the commit. A report it cannot read is
logged, counted and acked (a poison message must not stop the recorder); when the store is away, the
batch is held unacked and tried again, so its delivery count does not grow (the broker parks a message
redelivered `broker.delivery_limit` times). It also consumes <prefix>.parked (`ingress.parked`). A
report the store refuses (a value that does not fit its column) is told from the rest by halving the
batch, logged, counted and stored with its values cut to fit; the rest of the batch is stored as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.callback_jobs import callback_jobs, publish_callbacks
from ingress.metrics import (
    POSSIBLE_DUPLICATES,
    RECORDER_BATCHES,
    RECORDER_MALFORMED,
    RECORDER_RECORDS,
    RECORDER_REFUSED,
    REPORTS_FOLDED,
)
from ingress.parked import parked_reports
from shared.broker import ConfirmedPublisher, settle
from shared.envelope import decode_dead, decode_events, decode_reports
from shared.errors import EnvelopeError
from shared.logs import get_logger
from shared.model import AttemptRecord, DeliveryReport, Job
from shared.store.messages import utc
from shared.store.recording import DeadReport, fold
from shared.store.refusals import refused, write_isolating
from shared.topology import dead_queue, events_queue, parked_queue, reports_queue

log = get_logger("ingress.recorder")

PREFETCH_COUNT = 300
BATCH_MAX = 200
FLUSH_INTERVAL_S = 0.05
STORE_RETRY_PAUSE_S = 1.0

MESSAGE_ID_CHARS = 32

EVENTS = "events"
DEAD = "dead"
PARKED = "parked"
REPORTS = "reports"
SITE_CHARS = 64
PLATFORM_CHARS = 16


CALLBACK_CONFIRM_TIMEOUT_S = 10.0


class Recorder:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        prefix: str,
        confirm_timeout_s: float = CALLBACK_CONFIRM_TIMEOUT_S,
    ) -> None:
        self._sessions = sessions
        self._prefix = prefix
        self._confirm_timeout_s = confirm_timeout_s
        self._publisher: ConfirmedPublisher | None = None
        self._buffer: list[tuple[str, AbstractIncomingMessage]] = []
        self._wake: asyncio.Future[None] | None = None
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def start(self, connection: AbstractRobustConnection) -> None:
        # Callbacks of the changes a batch makes are confirmed before the batch commits and is acked.
        self._publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=self._confirm_timeout_s)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH_COUNT)
        p = self._prefix
        queues = (
            (EVENTS, events_queue(p)),
            (DEAD, dead_queue(p)),
            (REPORTS, reports_queue(p)),
            (PARKED, parked_queue(p)),
        )
        for kind, name in queues:
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
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.channel.close()

    def _receiver(self, kind: str):  # type: ignore[no-untyped-def]
        async def receive(message: AbstractIncomingMessage) -> None:
            self._buffer.append((kind, message))
            if len(self._buffer) >= BATCH_MAX:
                _wake(self._wake)

        return receive

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if len(self._buffer) < BATCH_MAX:  # a batch filled meanwhile leaves at once
                await self._pause(loop)
            if not self._buffer:
                continue
            batch, self._buffer = self._buffer[:BATCH_MAX], self._buffer[BATCH_MAX:]
            if not await self._fold_batch(batch):
                await asyncio.sleep(STORE_RETRY_PAUSE_S)

    async def _pause(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until FLUSH_INTERVAL_S passed or the buffer holds a full batch. A bare future and timer rather
        than `asyncio.timeout`, whose expiry cancels the task and raises: a profile of the ingress showed
        it on the hot loop."""
        self._wake = wake = loop.create_future()
        timer = loop.call_later(FLUSH_INTERVAL_S, _wake, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def _fold_batch(self, batch: list[tuple[str, AbstractIncomingMessage]]) -> bool:
        readable: list[Report] = []
        for kind, message in batch:
            try:
                readable.append(_decode(kind, message))
            except (EnvelopeError, KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
                await _drop(message, kind=kind, error=str(exc))
        if not readable:
            return True
        kept: list[Report] = []
        try:
            # A report the store refuses must not take the batch with it: found by halving the batch.
            await write_isolating(readable, self._apply, lambda report, exc: self._refused(report, exc, kept))
        except Exception as exc:
            RECORDER_BATCHES.labels("failed").inc()
            log.warning("recorder could not write to the store; holding", error=repr(exc), size=len(batch))
            self._hold(readable)
            return False
        kept_back = {id(report) for report in kept}
        for report in readable:
            await settle(report.message, ack=id(report) not in kept_back)
        return not kept

    def _hold(self, reports: list[Report]) -> None:
        """Keep these unacked, first in line for the next try: a nack would requeue them and count a
        delivery each time. Those of a channel lost meanwhile are left out; the broker redelivers them."""
        self._buffer[:0] = [(r.kind, r.message) for r in reports if not _stale(r.message)]

    async def _refused(self, report: Report, exc: Exception, kept: list[Report]) -> None:
        """Store a refused report cut to fit its columns; one the store refuses even so stays in its queue
        (never dropped), to be tried again."""
        ids = (
            [e.message_id for e in report.events]
            + [d.job.id for d in report.dead]
            + [r.message_id for r in report.reports]
        )
        try:
            await self._apply([report], fit=True)
        except Exception as again:
            if not refused(again):
                raise
            RECORDER_REFUSED.labels(report.kind, "kept").inc()
            log.error(
                "the store refuses a report even cut to fit; it stays in its queue",
                queue=report.kind,
                message_ids=ids,
                error=repr(again),
            )
            kept.append(report)
            return
        RECORDER_REFUSED.labels(report.kind, "fitted").inc()
        log.error(
            "the store refused a report; stored with its values cut to fit",
            queue=report.kind,
            message_ids=ids,
            error=repr(exc),
        )

    async def _apply(self, reports: Sequence[Report], *, fit: bool = False) -> None:
        events = [e for r in reports for e in r.events]
        dead = [d for r in reports for d in r.dead]
        delivery_reports = [d for r in reports for d in r.reports]
        async with self._sessions.begin() as session:
            result = await fold(session, events=events, dead=dead, reports=delivery_reports, fit=fit)
            callbacks = callback_jobs(result.changes)
            if callbacks:
                if self._publisher is None:
                    raise RuntimeError("the recorder has no channel to publish callbacks on")
                await publish_callbacks(
                    self._publisher, self._prefix, callbacks, timeout_s=self._confirm_timeout_s
                )
        self.batches += 1
        RECORDER_BATCHES.labels("ok").inc()
        RECORDER_RECORDS.labels("attempt").inc(result.attempts_added)
        RECORDER_RECORDS.labels("dead").inc(result.dead_added)
        RECORDER_RECORDS.labels("callback").inc(len(callbacks))
        POSSIBLE_DUPLICATES.inc(result.possible_duplicates_added)
        if delivery_reports:
            REPORTS_FOLDED.labels("stored").inc(result.reports_added)
            REPORTS_FOLDED.labels("repeated").inc(result.reports_seen_before)
            REPORTS_FOLDED.labels("unmatched").inc(result.reports_unmatched)


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    kind: str
    message: AbstractIncomingMessage
    events: list[AttemptRecord] = field(default_factory=list)
    dead: list[DeadReport] = field(default_factory=list)
    reports: list[DeliveryReport] = field(default_factory=list)


def _decode(kind: str, message: AbstractIncomingMessage) -> Report:
    """The report, once every value in it has the type the store needs; a `ValueError` (or the like)
    otherwise: such a report was not written by a worker, and no try could store it."""
    if kind == PARKED:
        events, dead, delivery_reports = parked_reports(message)
        for delivery_report in delivery_reports:
            _check_report(delivery_report)
        return Report(kind=kind, message=message, events=events, dead=dead, reports=delivery_reports)
    if kind == REPORTS:
        delivery_reports = decode_reports(message.body)
        for delivery_report in delivery_reports:
            _check_report(delivery_report)
        return Report(kind=kind, message=message, reports=delivery_reports)
    if kind == EVENTS:
        events = decode_events(message.body)
        for record in events:
            _check_record(record)
        return Report(kind=kind, message=message, events=events)
    job, verdict = decode_dead(message.body)
    report = DeadReport.from_envelope(job, verdict)
    _check_job(job)
    return Report(kind=kind, message=message, dead=[report])


def _check_record(record: AttemptRecord) -> None:
    _check_id(record.message_id)
    _check_types(record.site, record.detail, record.worker, texts=True)
    _check_types(record.attempt, numbers=True)
    utc(record.at)
    if record.latency_ms is not None:
        _check_types(record.latency_ms, reals=True)
    if record.job is not None:
        _check_job(record.job)


def _check_report(report: DeliveryReport) -> None:
    if report.message_id:
        _check_id(report.message_id)
    _check_types(report.site, report.platform, report.platform_status, report.raw, texts=True)
    if len(report.site) > SITE_CHARS or len(report.platform) > PLATFORM_CHARS:
        raise ValueError("a report's site or platform is longer than the store keeps")
    _check_types(report.attempt, numbers=True)
    utc(report.received_at)
    if report.at is not None:
        utc(report.at)


def _check_job(job: Job) -> None:
    _check_id(job.id)
    _check_types(job.tenant, job.to, job.sender, job.body, job.encoding, job.reference or "", texts=True)
    _check_types(job.segments, numbers=True)
    utc(job.accepted_at)
    utc(job.expires_at)


def _check_id(message_id: object) -> None:
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MESSAGE_ID_CHARS:
        raise ValueError(f"a message id is 1 to {MESSAGE_ID_CHARS} characters")


def _check_types(*values: object, texts: bool = False, numbers: bool = False, reals: bool = False) -> None:
    wanted: tuple[type, ...] = (str,) if texts else (int,) if numbers else (int, float)
    if any(not isinstance(v, wanted) or isinstance(v, bool) for v in values) or (
        reals and not all(math.isfinite(cast(float, v)) for v in values)
    ):
        raise TypeError(f"expected {' or '.join(t.__name__ for t in wanted)}, got {values!r}")


async def _drop(message: AbstractIncomingMessage, *, kind: str, error: str) -> None:
    RECORDER_MALFORMED.inc()
    log.error(
        "unreadable report dropped",
        queue=kind,
        message_id=message.message_id,
        error=error,
        size=len(message.body),
    )
    await settle(message, ack=True)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _stale(message: AbstractIncomingMessage) -> bool:
    try:
        _ = message.channel
    except ChannelInvalidStateError:
        return True
    return False
