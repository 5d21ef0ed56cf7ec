"""Group commit of the messages rows written at submit: every row that arrives while one transaction
runs goes into the next one, so concurrent submits share one transaction and one fsync.

The rows waiting for a commit are bounded (`queue_rows_max`): a submit beyond the bound waits for room
for as long as it waits for its row (`ingress.store_wait_s`), and when it stops waiting first its rows go
to the ones kept for retry, not lost. When the store is down the waiting submits hear so at once (their
message is durable in the broker or the spool all the same, which is the promise that matters) and the
rows are kept and written again in the background until the store is back (up to `MAX_RETRY_ROWS`;
beyond that they are logged, and the recorder writes a message's row from the job its workers report).

A row the store refuses (a value its column cannot hold) must not fail the commit of the others: the
batch is halved until the row stands alone, and it is written with its values cut to fit, so the message
stays visible; it is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.metrics import (
    STORE_BATCH_ROWS,
    STORE_PENDING_ROWS,
    STORE_RETRY_ROWS,
    STORE_ROWS_REFUSED,
    STORE_WRITES,
)
from shared.errors import StoreUnavailable
from shared.logs import get_logger
from shared.store.messages import MESSAGES, insert_submitted, insert_submitted_sync
from shared.store.refusals import fitted, refused, write_isolating

log = get_logger("ingress.store")

MAX_RETRY_ROWS = 100_000
RETRY_INTERVAL_S = 1.0
QUEUE_BATCHES = 4  # the bound on rows waiting for a commit, in group commits of `batch_max`

Row = dict[str, Any]


@dataclass(eq=False, slots=True)
class _Submit:
    rows: list[Row]
    done: asyncio.Future[None]
    queued: bool = False


class StoreWriter:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        batch_max: int,
        sync_engine: Engine | None = None,
        queue_rows_max: int | None = None,
    ) -> None:
        self._sessions = sessions
        # SQLite: one thread owns the writes, so a group commit is one hop off the event loop.
        self._sync_engine = sync_engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._batch_max = batch_max
        self._queue_rows_max = queue_rows_max or QUEUE_BATCHES * batch_max
        self._queue: deque[_Submit] = deque()
        self._waiting: deque[_Submit] = deque()  # no room yet
        self._pending_rows = 0  # queued or being written
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._retry: list[Row] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def retry_backlog(self) -> int:
        return len(self._retry)

    @property
    def pending_rows(self) -> int:
        """Rows queued or being written, never more than `queue_rows_max` (or one submit's rows)."""
        return self._pending_rows

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="store-writer"),
            asyncio.create_task(self._retry_loop(), name="store-writer-retry"),
        ]

    async def close(self, *, drain_timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                while self._pending_rows or self._waiting:
                    self._drained.clear()
                    await self._drained.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = self._pending_rows + sum(len(s.rows) for s in self._waiting) + len(self._retry)
        if left:
            log.error("store still away at shutdown: messages rows not written", rows=left)
        self._thread.shutdown(wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    def add(self, rows: list[Row]) -> asyncio.Future[None]:
        """A future done once `rows` are committed, failed with `StoreUnavailable` when that commit failed.

        Cancelling it only stops the wait: the rows are written all the same (kept for retry when they
        were still waiting for room).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A caller that stopped waiting never reads the verdict; read it so asyncio does not warn.
        done.add_done_callback(_read_verdict)
        submit = _Submit(rows=rows, done=done)
        if self._waiting or not self._has_room(len(rows)):
            self._waiting.append(submit)
            done.add_done_callback(lambda _: self._gave_up(submit))
        else:
            self._enqueue(submit)
        return done

    def _has_room(self, count: int) -> bool:
        # One submit larger than the bound is let in alone, or it would never be.
        return self._pending_rows == 0 or self._pending_rows + count <= self._queue_rows_max

    def _enqueue(self, submit: _Submit) -> None:
        submit.queued = True
        self._queue.append(submit)
        self._pending_rows += len(submit.rows)
        STORE_PENDING_ROWS.set(self._pending_rows)
        self._wake.set()

    def _gave_up(self, submit: _Submit) -> None:
        if submit.queued:
            return
        self._waiting.remove(submit)
        self._keep_for_retry(submit.rows, "no room in the queue before the submit stopped waiting")

    def _admit_waiting(self) -> None:
        while self._waiting and self._has_room(len(self._waiting[0].rows)):
            self._enqueue(self._waiting.popleft())

    async def _write(self, rows: Sequence[Row]) -> None:
        if self._sync_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._write_sync, list(rows))
            return
        async with self._sessions.begin() as session:
            await insert_submitted(session, list(rows))

    def _write_sync(self, rows: list[Row]) -> None:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as connection:
            insert_submitted_sync(connection, rows)

    async def _write_keeping_others(self, rows: list[Row]) -> None:
        """Write `rows`; a row the store refuses is found by halving and written cut to fit."""
        await write_isolating(rows, self._write, self._refused)

    async def _refused(self, row: Row, exc: Exception) -> None:
        try:
            await self._write([fitted(MESSAGES, row)])
        except Exception as again:
            if not refused(again):
                raise
            STORE_ROWS_REFUSED.labels("dropped").inc()
            log.error(
                "the store refuses a messages row even cut to fit: not written (the message is durable; "
                "the recorder writes its row from the job when a worker reports)",
                id=row["id"],
                error=repr(again),
            )
            return
        STORE_ROWS_REFUSED.labels("fitted").inc()
        log.error(
            "the store refused a messages row: written with values cut to fit", id=row["id"], error=repr(exc)
        )

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft()]
            count = len(batch[0].rows)
            while count < self._batch_max and self._queue:
                batch.append(self._queue.popleft())
                count += len(batch[-1].rows)
            rows = [row for submit in batch for row in submit.rows]
            try:
                await self._write_keeping_others(rows)
            except Exception as exc:
                STORE_WRITES.labels("failed").inc()
                self._keep_for_retry(rows, repr(exc))
                _settle(batch, StoreUnavailable(f"store write failed: {exc!r}"))
            else:
                STORE_WRITES.labels("ok").inc()
                STORE_BATCH_ROWS.observe(len(rows))
                _settle(batch, None)
            finally:
                self._pending_rows -= count
                self._admit_waiting()
                STORE_PENDING_ROWS.set(self._pending_rows)
                if not self._pending_rows and not self._waiting:
                    self._drained.set()

    def _keep_for_retry(self, rows: list[Row], why: str) -> None:
        room = MAX_RETRY_ROWS - len(self._retry)
        if room < len(rows):
            log.error(
                "too many messages rows kept for retry: dropping some (the messages themselves are durable, "
                "and the recorder writes their rows from the jobs its workers report)",
                dropped=len(rows) - max(room, 0),
                ids=[r["id"] for r in rows[max(room, 0) :][:20]],
            )
        if not self._retry:  # once per spell, not once per submit
            log.warning("messages rows not written yet, will retry", rows=len(rows), why=why)
        self._retry.extend(rows[: max(room, 0)])
        STORE_RETRY_ROWS.set(len(self._retry))

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL_S)
            while self._retry:
                chunk = self._retry[: self._batch_max]
                try:
                    await self._write_keeping_others(chunk)
                except Exception:
                    break
                del self._retry[: len(chunk)]
                STORE_RETRY_ROWS.set(len(self._retry))
                log.info("store back: wrote kept messages rows", rows=len(chunk))


def _settle(batch: list[_Submit], error: Exception | None) -> None:
    for submit in batch:
        if submit.done.done():
            continue
        if error is None:
            submit.done.set_result(None)
        else:
            submit.done.set_exception(error)


def _read_verdict(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
