"""Group commit of the messages rows written at submit: every row that arrives while one transaction
runs goes into the next one, so concurrent submits share one transaction and one fsync.

When the store is down the waiting submits hear so at once (their message is durable in the broker or
the spool all the same, which is the promise that matters) and the rows are kept and written again in
the background until the store is back (up to `MAX_RETRY_ROWS`; beyond that they are logged and only
the recorder's dead-letter path can recreate them).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.metrics import STORE_BATCH_ROWS, STORE_WRITES
from shared.errors import StoreUnavailable
from shared.logs import get_logger
from shared.store.messages import insert_submitted, insert_submitted_sync

log = get_logger("ingress.store")

MAX_RETRY_ROWS = 100_000
RETRY_INTERVAL_S = 1.0


class StoreWriter:
    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], batch_max: int, sync_engine: Engine | None = None
    ) -> None:
        self._sessions = sessions
        # SQLite: one thread owns the writes, so a group commit is one hop off the event loop.
        self._sync_engine = sync_engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._batch_max = batch_max
        self._queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[None]]] = asyncio.Queue()
        self._retry: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def retry_backlog(self) -> int:
        return len(self._retry)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="store-writer"),
            asyncio.create_task(self._retry_loop(), name="store-writer-retry"),
        ]

    async def close(self, *, drain_timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._retry:
            log.error("store still down at shutdown: messages rows not written", rows=len(self._retry))
        self._thread.shutdown(wait=True)
        if self._sync_engine is not None:
            self._sync_engine.dispose()

    def add(self, rows: list[dict[str, Any]]) -> asyncio.Future[None]:
        """A future done once `rows` are committed, failed with `StoreUnavailable` when that commit failed.

        Cancelling it only stops the wait: the rows are written all the same.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A caller that stopped waiting never reads the verdict; read it so asyncio does not warn.
        done.add_done_callback(_read_verdict)
        self._queue.put_nowait((rows, done))
        return done

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._sync_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._write_sync, rows)
            return
        async with self._sessions.begin() as session:
            await insert_submitted(session, rows)

    def _write_sync(self, rows: list[dict[str, Any]]) -> None:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as connection:
            insert_submitted_sync(connection, rows)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            count = len(batch[0][0])
            while count < self._batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                count += len(item[0])
            rows = [row for item_rows, _ in batch for row in item_rows]
            try:
                await self._write(rows)
            except Exception as exc:
                STORE_WRITES.labels("failed").inc()
                self._keep_for_retry(rows, exc)
                error = StoreUnavailable(f"store write failed: {exc!r}")
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                    self._queue.task_done()
                continue
            STORE_WRITES.labels("ok").inc()
            STORE_BATCH_ROWS.observe(len(rows))
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
                self._queue.task_done()

    def _keep_for_retry(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        room = MAX_RETRY_ROWS - len(self._retry)
        if room < len(rows):
            log.error(
                "store down too long: dropping messages rows (the messages themselves are durable)",
                dropped=len(rows) - max(room, 0),
                ids=[r["id"] for r in rows[max(room, 0) :][:20]],
            )
        self._retry.extend(rows[: max(room, 0)])
        log.warning("store write failed, will retry", rows=len(rows), error=repr(exc))

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL_S)
            while self._retry:
                chunk = self._retry[: self._batch_max]
                try:
                    await self._write(chunk)
                except Exception:
                    break
                del self._retry[: len(chunk)]
                log.info("store back: wrote kept messages rows", rows=len(chunk))


def _read_verdict(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
