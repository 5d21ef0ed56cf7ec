"""The local spool: an fsynced SQLite file keeping submits the broker did not confirm in time.

WAL with synchronous=FULL (`shared.store.engine.make_durable`) makes every commit an fsync; appends are
group-committed (all appends that arrive while one commit runs share the next one). One thread owns the
SQLite connection, so the event loop never blocks on the disk.

Each ingress process claims a spool file of its own with an exclusive `flock` on a lock file beside it.
A file whose lock nobody holds belongs to a process that died: the forwarder drains it as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from shared.errors import ConfigError
from shared.store.engine import make_durable

MAX_SPOOL_FILES = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    spooled_at REAL NOT NULL
)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolEntry:
    message_id: str
    routing_key: str  # the site
    headers: dict[str, Any]
    body: bytes
    spooled_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Spooled:
    seq: int
    entry: SpoolEntry


def spool_file(base: Path, index: int) -> Path:
    """Process 0 uses the configured file; process n uses ``<stem>.<n><suffix>`` beside it."""
    if index == 0:
        return base
    return base.with_name(f"{base.stem}.{index}{base.suffix}")


def spool_files(base: Path) -> list[Path]:
    """Every spool file that exists beside `base`, its own included."""
    found = [base] if base.exists() else []
    found += sorted(p for p in base.parent.glob(f"{base.stem}.*{base.suffix}") if _index_of(base, p) > 0)
    return found


def _index_of(base: Path, path: Path) -> int:
    middle = path.name[len(base.stem) + 1 : len(path.name) - len(base.suffix)]
    return int(middle) if middle.isdigit() else -1


class SpoolLock:
    """An exclusive, non-blocking `flock` on ``<spool file>.lock``; released when the process dies."""

    def __init__(self, *, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle

    @classmethod
    def try_acquire(cls, spool_path: Path) -> SpoolLock | None:
        lock_path = spool_path.with_name(spool_path.name + ".lock")
        handle = lock_path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(path=spool_path, handle=handle)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()


def claim_spool_file(base: Path) -> SpoolLock:
    """The first spool file beside `base` no live process holds."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for index in range(MAX_SPOOL_FILES):
        lock = SpoolLock.try_acquire(spool_file(base, index))
        if lock is not None:
            return lock
    raise ConfigError(f"ingress.spool_path: all {MAX_SPOOL_FILES} spool files beside {base} are in use")


class Spool:
    """One spool file; `append` returns once the entries are fsynced."""

    def __init__(self, *, path: Path, batch_max: int = 1000) -> None:
        self.path = path
        self._batch_max = batch_max
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"spool-{path.name}")
        self._db: sqlite3.Connection | None = None
        self._pending: asyncio.Queue[tuple[list[SpoolEntry], asyncio.Future[None]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.backlog = 0
        self.appended = asyncio.Event()  # set whenever entries arrive; the forwarder waits on it

    async def open(self) -> Spool:
        self.backlog = await self._run(self._open_db)
        self._writer = asyncio.create_task(self._write_loop(), name=f"spool-writer-{self.path.name}")
        if self.backlog:
            self.appended.set()
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._run(self._close_db)
        self._thread.shutdown(wait=True)

    async def append(self, entries: list[SpoolEntry]) -> None:
        if not entries:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._pending.put((entries, done))
        await done

    async def head(self, limit: int) -> list[Spooled]:
        """The oldest `limit` entries, in order of arrival."""
        entries: list[Spooled] = await self._run(self._head, limit)
        return entries

    async def remove(self, seqs: list[int]) -> None:
        if seqs:
            await self._run(self._remove, seqs)
            self.backlog = max(0, self.backlog - len(seqs))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._pending.get()]
            rows = len(batch[0][0])
            while rows < self._batch_max and not self._pending.empty():
                item = self._pending.get_nowait()
                batch.append(item)
                rows += len(item[0])
            try:
                await self._run(self._insert, [e for entries, _ in batch for e in entries])
            except Exception as exc:  # a full or broken disk: every waiting submit must hear it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.backlog += rows
            self.appended.set()
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    # The methods below run in the spool's own thread.

    def _open_db(self) -> int:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        make_durable(db)
        db.execute(_SCHEMA)
        self._db = db
        (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
        return int(count)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _insert(self, entries: list[SpoolEntry]) -> None:
        assert self._db is not None
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO spool (message_id, routing_key, headers, body, spooled_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(e.message_id, e.routing_key, orjson.dumps(e.headers), e.body, now) for e in entries],
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _head(self, limit: int) -> list[Spooled]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT seq, message_id, routing_key, headers, body, spooled_at FROM spool ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Spooled(
                seq=seq,
                entry=SpoolEntry(
                    message_id=mid, routing_key=rk, headers=orjson.loads(h), body=bytes(b), spooled_at=at
                ),
            )
            for seq, mid, rk, h, b, at in rows
        ]

    def _remove(self, seqs: list[int]) -> None:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("DELETE FROM spool WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
