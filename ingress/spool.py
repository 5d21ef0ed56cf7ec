"""The local spool: an fsynced SQLite file keeping submits the broker did not confirm in time.

WAL with synchronous=FULL (`shared.store.engine.make_durable`) makes every commit an fsync; appends are
group-committed (all appends that arrive while one commit runs share the next one). One thread owns the
SQLite connection, so the event loop never blocks on the disk.

An entry a copy of which may already be queued is marked (`maybe_sent`) and forwarded with the header
`x-relay-possible-duplicate`, so the worker records its attempt as a possible duplicate. That happens when
a submit stopped waiting for its bundle's confirm: the job is spooled marked and held back from the
forwarder while the publish may still be confirmed (`append(..., awaiting=...)`); the verdict removes it
(confirmed), unmarks it (never taken) or releases it marked (nacked, channel lost). A forward is marked on
disk before it leaves, so one repeated after a lost connection or a crash carries the header too.

Each ingress process claims a spool file of its own with an exclusive `flock` on a lock file beside it.
A file whose lock nobody holds belongs to a process that died: the forwarder drains it as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from shared.broker import Fate, Verdict
from shared.envelope import H_POSSIBLE_DUPLICATE
from shared.errors import ConfigError, NotFound
from shared.logs import get_logger
from shared.store.engine import make_durable

log = get_logger("ingress.spool")

MAX_SPOOL_FILES = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    spooled_at REAL NOT NULL,
    maybe_sent INTEGER NOT NULL DEFAULT 0
)
"""
# Spool files written before entries could be marked.
_ADD_MAYBE_SENT = "ALTER TABLE spool ADD COLUMN maybe_sent INTEGER NOT NULL DEFAULT 0"


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolEntry:
    message_id: str
    routing_key: str  # the site
    headers: dict[str, Any]
    body: bytes
    spooled_at: float = 0.0
    maybe_sent: bool = False  # a copy may be queued already: forward it marked

    def forward_headers(self) -> dict[str, Any]:
        return {**self.headers, H_POSSIBLE_DUPLICATE: True} if self.maybe_sent else self.headers


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
        self._pending: asyncio.Queue[tuple[list[SpoolEntry], asyncio.Future[list[int]]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.backlog = 0
        # Set whenever the forwarder may have more to do: entries arrived, or held ones were released.
        self.changed = asyncio.Event()
        self._held: set[str] = set()  # message ids whose publish is still in flight
        self._verdicts: list[tuple[int, str, Verdict]] = []
        self._settler: asyncio.Task[None] | None = None
        # Between reading the head and leaving out the held entries, no verdict may remove one of them.
        self._head_lock = asyncio.Lock()

    async def open(self) -> Spool:
        self.backlog = await self._run(self._open_db)
        self._writer = asyncio.create_task(self._write_loop(), name=f"spool-writer-{self.path.name}")
        if self.backlog:
            self.changed.set()
        return self

    async def close(self) -> None:
        if self._settler is not None:
            await asyncio.gather(self._settler, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._run(self._close_db)
        self._thread.shutdown(wait=True)

    async def append(
        self, entries: list[SpoolEntry], *, awaiting: list[asyncio.Future[Verdict]] | None = None
    ) -> None:
        """Returns once `entries` are fsynced. With `awaiting` (one future per entry), a publish of each
        entry is still in flight: the entry is kept from the forwarder until its verdict settles it."""
        if not entries:
            return
        done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if awaiting is not None:
            self._held.update(e.message_id for e in entries)  # before the rows exist: no head misses it
            done.add_done_callback(functools.partial(self._await_verdicts, entries, awaiting))
        self._pending.put_nowait((entries, done))
        # Shielded: a caller that stops waiting does not stop the write, nor the holds that follow it.
        await asyncio.shield(done)

    def _await_verdicts(
        self,
        entries: list[SpoolEntry],
        awaiting: list[asyncio.Future[Verdict]],
        done: asyncio.Future[list[int]],
    ) -> None:
        if done.cancelled() or done.exception() is not None:  # not written: nothing to hold
            self._held.difference_update(e.message_id for e in entries)
            return
        for seq, entry, verdict in zip(done.result(), entries, awaiting, strict=True):
            verdict.add_done_callback(functools.partial(self._verdict_came, seq, entry.message_id))

    async def head(self, limit: int) -> list[Spooled]:
        """The oldest `limit` entries, in order of arrival."""
        entries: list[Spooled] = await self._run(self._head, limit)
        return entries

    async def forwardable(self, limit: int) -> list[Spooled]:
        """The oldest entries up to the first one still held: they leave in order of arrival."""
        async with self._head_lock:
            entries = await self.head(limit)
            for index, spooled in enumerate(entries):
                if spooled.entry.message_id in self._held:
                    return entries[:index]
            return entries

    @property
    def held(self) -> int:
        return len(self._held)

    async def mark(self, seqs: list[int]) -> None:
        """A publish of these entries is about to leave: from now on a copy may be queued."""
        if seqs:
            await self._run(self._update, "UPDATE spool SET maybe_sent = 1 WHERE seq = ?", seqs)

    async def settle(self, fates: list[tuple[int, Fate]]) -> None:
        """Apply publish verdicts: a confirmed entry is removed, one never taken unmarked, and one that
        may be queued stays (marked)."""
        removed = [seq for seq, fate in fates if fate is Fate.CONFIRMED]
        not_taken = [seq for seq, fate in fates if fate is Fate.NOT_TAKEN]
        if removed:
            await self._run(self._update, "DELETE FROM spool WHERE seq = ?", removed)
            self.backlog = max(0, self.backlog - len(removed))
        if not_taken:
            await self._run(self._update, "UPDATE spool SET maybe_sent = 0 WHERE seq = ?", not_taken)

    def _verdict_came(self, seq: int, message_id: str, verdict: asyncio.Future[Verdict]) -> None:
        came = Verdict(Fate.UNKNOWN, "cancelled") if verdict.cancelled() else verdict.result()
        self._verdicts.append((seq, message_id, came))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_held(), name=f"spool-settle-{self.path.name}")

    async def _settle_held(self) -> None:
        while self._verdicts:
            verdicts, self._verdicts = self._verdicts, []
            async with self._head_lock:
                try:
                    await self.settle([(seq, verdict.fate) for seq, _, verdict in verdicts])
                except Exception as exc:  # they stay marked: forwarded, a possible duplicate at worst
                    log.error("settling held spool entries failed", error=repr(exc), count=len(verdicts))
                self._held.difference_update(message_id for _, message_id, _ in verdicts)
            self.changed.set()

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
                last: int = await self._run(self._insert, [e for entries, _ in batch for e in entries])
            except Exception as exc:  # a full or broken disk: every waiting submit must hear it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.backlog += rows
            self.changed.set()
            first = last - rows + 1  # one writer, one transaction: the batch's seqs are consecutive
            for entries, done in batch:
                if not done.done():
                    done.set_result(list(range(first, first + len(entries))))
                first += len(entries)

    # The methods below run in the spool's own thread.

    def _open_db(self) -> int:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        make_durable(db)
        db.execute(_SCHEMA)
        if "maybe_sent" not in {row[1] for row in db.execute("PRAGMA table_info(spool)")}:
            db.execute(_ADD_MAYBE_SENT)
        self._db = db
        (count,) = db.execute("SELECT count(*) FROM spool").fetchone()
        return int(count)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _insert(self, entries: list[SpoolEntry]) -> int:
        """Returns the seq of the last entry."""
        assert self._db is not None
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO spool (message_id, routing_key, headers, body, spooled_at, maybe_sent)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (e.message_id, e.routing_key, orjson.dumps(e.headers), e.body, now, e.maybe_sent)
                    for e in entries
                ],
            )
            (last,) = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'spool'").fetchone()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return int(last)

    def _head(self, limit: int) -> list[Spooled]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT seq, message_id, routing_key, headers, body, spooled_at, maybe_sent FROM spool"
            " ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Spooled(
                seq=seq,
                entry=SpoolEntry(
                    message_id=mid,
                    routing_key=rk,
                    headers=orjson.loads(h),
                    body=bytes(b),
                    spooled_at=at,
                    maybe_sent=bool(maybe_sent),
                ),
            )
            for seq, mid, rk, h, b, at, maybe_sent in rows
        ]

    def _update(self, statement: str, seqs: list[int]) -> None:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(statement, [(s,) for s in seqs])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSummary:
    path: Path
    backlog: int
    marked: int  # entries a copy of which may be queued already: forwarded as possible duplicates
    oldest_at: float | None  # when the oldest entry was spooled (epoch seconds)
    by_site: dict[str, int]


def summarize(path: Path) -> SpoolSummary:
    """What a spool file holds, read without creating anything; `NotFound` when there is no file and
    `ConfigError` when the file is not a spool."""
    if not path.is_file():
        raise NotFound(f"there is no spool file at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {path} as a spool: {exc}") from None
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(spool)")}
        if not columns:
            raise ConfigError(f"{path} is not a spool file (it has no spool table)")
        marked = "coalesce(sum(maybe_sent), 0)" if "maybe_sent" in columns else "0"
        count, oldest, marked_count = db.execute(
            f"SELECT count(*), min(spooled_at), {marked} FROM spool"
        ).fetchone()
        sites = db.execute("SELECT routing_key, count(*) FROM spool GROUP BY routing_key").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path} is not a spool file: {exc}") from None
    finally:
        db.close()
    return SpoolSummary(
        path=path,
        backlog=int(count),
        marked=int(marked_count),
        oldest_at=float(oldest) if oldest is not None else None,
        by_site={str(site): int(n) for site, n in sites},
    )
