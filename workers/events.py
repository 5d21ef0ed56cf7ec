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
from shared.envelope import encode_events
from shared.errors import TransientError
from shared.logs import get_logger
from shared.model import AttemptRecord

log = get_logger(__name__)

MAX_RECORDS_PER_MESSAGE = 100
# A batch the broker refuses is tried again, backing off, before its jobs are given up as unconfirmed.
PUBLISH_TRIES = 6
FIRST_BACKOFF_S = 0.1


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
        body = encode_events([record for record, _ in chunk])
        backoff_s = FIRST_BACKOFF_S
        error: Exception | None = None
        for _ in range(PUBLISH_TRIES):
            try:
                await self._publisher.publish(body, exchange=self._exchange, routing_key="")
            except TransientError as exc:
                error = exc
                log.warning("event publish failed", error=str(exc), records=len(chunk))
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
                continue
            for _, future in chunk:
                if not future.done():
                    future.set_result(None)
            return
        for _, future in chunk:
            if not future.done():
                future.set_exception(error or TransientError("event publish failed"))
                # Retrieved here too so an abandoned future never logs "exception never retrieved".
                with contextlib.suppress(BaseException):
                    future.exception()
