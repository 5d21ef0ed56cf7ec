"""Attempt records on their way to the store, published in confirmed batches (group commit).

A job is acked only after the record of its attempt is confirmed by the broker, so the final status of a
delivered message can never be lost between the platform and the store. Records are published as soon as
the previous publish is confirmed: while one confirm is outstanding the next batch fills up, so the batch
size follows the load and an idle worker adds no delay.
"""

from __future__ import annotations

import asyncio
import contextlib

from shared.broker import ConfirmedPublisher
from shared.envelope import encode_events, encode_reports
from shared.errors import TransientError
from shared.logs import get_logger
from shared.model import AttemptRecord, DeliveryReport
from shared.topology import reports_exchange

log = get_logger(__name__)

MAX_RECORDS_PER_MESSAGE = 100
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


class EventSink:
    def __init__(self, *, publisher: ConfirmedPublisher, exchange: str) -> None:
        self._publisher = publisher
        self._exchange = exchange
        self._pending: list[tuple[AttemptRecord, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-sink")

    def record(self, record: AttemptRecord) -> asyncio.Future[None]:
        """Queue one record; the future resolves once the broker has confirmed it (or fails)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._wake.set()
        return future

    async def close(self) -> None:
        """Publish what is pending, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                taken, self._pending = self._pending, []
                chunks = [
                    taken[i : i + MAX_RECORDS_PER_MESSAGE]
                    for i in range(0, len(taken), MAX_RECORDS_PER_MESSAGE)
                ]
                await asyncio.gather(*(self._publish(chunk) for chunk in chunks))
            if self._closing:
                return

    async def _publish(self, chunk: list[tuple[AttemptRecord, asyncio.Future[None]]]) -> None:
        # Tried again until confirmed: the jobs these records describe were delivered, and giving up would
        # hand them back to their queue to be delivered a second time. Only a closing sink gives up; its
        # jobs then stay unacked and the broker redelivers them when the connection closes.
        body = encode_events([record for record, _ in chunk])
        backoff_s = FIRST_BACKOFF_S
        while True:
            try:
                await self._publisher.publish(body, exchange=self._exchange, routing_key="")
            except TransientError as exc:
                log.warning("event publish failed; trying again", error=str(exc), records=len(chunk))
                if self._closing:
                    _fail(chunk, exc)
                    return
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
                continue
            for _, future in chunk:
                if not future.done():
                    future.set_result(None)
            return


def _fail(chunk: list[tuple[AttemptRecord, asyncio.Future[None]]], error: Exception) -> None:
    for _, future in chunk:
        if not future.done():
            future.set_exception(error)
            # Retrieved here too so an abandoned future never logs "exception never retrieved".
            with contextlib.suppress(BaseException):
                future.exception()


class ReportPublisher:
    """Delivery reports a platform sent on the worker's own connection to it (SMPP receipts), each
    published with a confirm before the platform is answered."""

    def __init__(self, *, publisher: ConfirmedPublisher, prefix: str) -> None:
        self._publisher = publisher
        self._exchange = reports_exchange(prefix)

    async def publish(self, report: DeliveryReport) -> None:
        """Returns once the broker confirmed it; raises (`TransientError`) when it did not."""
        await self._publisher.publish(encode_reports([report]), exchange=self._exchange, routing_key="")
