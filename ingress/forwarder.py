"""Drains the spool to the broker in order of arrival once the broker confirms again.

Each entry is deleted only after its confirm, and a forward waits for the broker's verdict however long
it takes instead of publishing again while the first confirm may still come. An entry is marked on disk
before its forward leaves: one forwarded again (the connection was lost before the verdict, the process
died) carries the header `x-relay-possible-duplicate`, under the same message id. Entries whose bundle
publish is still in flight stay where they are, and so does everything behind them. Spool files of dead
ingress processes (their lock is free) are drained the same way: those beside this process's own file
(the other processes of one replica) and those of the peer replicas named in `ingress.peer_spool_paths`.
`relay spool drain` drains one such file from any machine (`drain_file`). A delivery report the broker
did not confirm is spooled too (`ingress.report_intake`), and forwarded to the reports exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from ingress.broker_link import BrokerLink
from ingress.detours import Detours
from ingress.metrics import FORWARDED, SPOOL_BACKLOG
from ingress.spool import Spool, SpoolEntry, SpoolLock, spool_files
from shared.broker import Fate, Verdict
from shared.logs import get_logger
from shared.reports import SPOOLED_REPORT_KEY

log = get_logger("ingress.forwarder")

BATCH = 256
RETRY_PAUSE_S = 0.5
MAX_RETRY_PAUSE_S = 5.0
ORPHAN_SCAN_INTERVAL_S = 5.0


class Forwarder:
    def __init__(
        self,
        *,
        spool: Spool,
        link: BrokerLink,
        spool_base: Path,
        detours: Detours,
        peers: Sequence[Path] = (),
    ) -> None:
        self._spool = spool
        self._link = link
        self._detours = detours
        self._spool_base = spool_base
        self._peers = list(peers)
        self._tasks: list[asyncio.Task[None]] = []
        self.orphans_drained = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._own_loop(), name="spool-forwarder"),
            asyncio.create_task(self._orphan_loop(), name="spool-orphans"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _own_loop(self) -> None:
        spool = self._spool
        failures = 0
        while True:
            SPOOL_BACKLOG.set(spool.backlog)
            if not self._link.available:
                await asyncio.sleep(0.1)
                continue
            spool.changed.clear()
            forwarded, failed = await forward_batch(spool, self._link, self._detours)
            failures = failures + 1 if failed else 0
            if failed:
                # A broker that refuses (say, an unroutable site) is asked again, less and less often.
                await asyncio.sleep(min(MAX_RETRY_PAUSE_S, RETRY_PAUSE_S * 2 ** min(failures - 1, 4)))
            elif not forwarded:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await spool.changed.wait()

    async def _orphan_loop(self) -> None:
        while True:
            try:
                await self._drain_orphans()
            except Exception as exc:
                log.error("draining orphaned spool files failed", error=repr(exc))
            await asyncio.sleep(ORPHAN_SCAN_INTERVAL_S)

    async def _drain_orphans(self) -> None:
        if not self._link.available:
            return
        own = self._spool.path.resolve()
        for path in orphan_candidates(self._spool_base, self._peers):
            if path.resolve() == own:
                continue
            lock = SpoolLock.try_acquire(path)
            if lock is None:  # a live ingress process owns it
                continue
            try:
                self.orphans_drained += await drain_file(path, self._link, detours=self._detours)
            finally:
                lock.release()


def orphan_candidates(base: Path, peers: Sequence[Path]) -> list[Path]:
    """Every spool file beside this replica's own and beside each peer replica's `spool_path`."""
    seen: set[Path] = set()
    found: list[Path] = []
    for spool_base in (base, *peers):
        for path in spool_files(spool_base):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append(path)
    return found


async def drain_file(
    path: Path,
    link: BrokerLink,
    *,
    detours: Detours | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Forward a spool file whose lock the caller holds, batch by batch, until it is empty, the broker
    is away, or a batch is not wholly confirmed; returns how many entries were confirmed. `progress` gets
    (confirmed so far, backlog left) after each batch."""
    drained = 0
    orphan = await Spool(path=path).open()
    try:
        if orphan.backlog:
            log.info("draining orphaned spool", file=str(path), backlog=orphan.backlog)
        while orphan.backlog and link.available:
            forwarded, failed = await forward_batch(orphan, link, detours)
            drained += forwarded
            if progress is not None:
                progress(drained, orphan.backlog)
            if failed or not forwarded:
                break
    finally:
        await orphan.close()
    return drained


async def forward_batch(spool: Spool, link: BrokerLink, detours: Detours | None = None) -> tuple[int, int]:
    """Publish the oldest forwardable entries (verdicts awaited in parallel, order kept on the channel);
    delete the confirmed. Returns how many were confirmed and how many were not. With `detours`, an
    entry its site's queue keeps refusing goes to another site's queue (`ingress.detours`)."""
    entries = await spool.forwardable(BATCH)
    if not entries:
        return 0, 0
    await spool.mark([s.seq for s in entries if not s.entry.maybe_sent])
    verdicts = await asyncio.gather(*(_forward(s.entry, link, detours) for s in entries))
    # Not taken this time does not unmark an entry a copy of which may be queued from before.
    await spool.settle(
        [
            (s.seq, Fate.UNKNOWN if s.entry.maybe_sent and v.fate is Fate.NOT_TAKEN else v.fate)
            for s, v in zip(entries, verdicts, strict=True)
        ]
    )
    if detours is not None:
        for s, v in zip(entries, verdicts, strict=True):
            if s.entry.routing_key != SPOOLED_REPORT_KEY:
                detours.settle(s.entry.message_id, v)
    confirmed = sum(1 for v in verdicts if v.confirmed)
    FORWARDED.inc(confirmed)
    SPOOL_BACKLOG.set(spool.backlog)
    failed = len(entries) - confirmed
    if failed:
        first = next(v for v in verdicts if not v.confirmed)
        log.warning("spool forward incomplete", forwarded=confirmed, failed=failed, error=first.reason)
    else:
        log.info("spool forwarded", forwarded=confirmed, backlog=spool.backlog)
    return confirmed, failed


async def _forward(entry: SpoolEntry, link: BrokerLink, detours: Detours | None) -> Verdict:
    """A spooled job to its site's queue (or its detour), a spooled report to the reports exchange."""
    if entry.routing_key == SPOOLED_REPORT_KEY:
        return await link.publish_reports(entry.body)
    site = entry.routing_key
    if detours is not None:
        site = detours.routing_key(entry.message_id, site)
    return await link.publish_job(
        body=entry.body, site=site, message_id=entry.message_id, headers=entry.forward_headers()
    )
