"""The ingress's runtime: everything a submit touches, started and stopped together.

A submit is answered once every message in it is durable: confirmed by the broker, or fsynced in the
spool when the broker cannot confirm in time. The messages rows are written to the store at the same
time (group commit), so the answer waits for the slower of the two, not their sum. A store that is
down does not fail a submit: the message is durable, its row is written when the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ingress.auth import KeyCache
from ingress.broker_link import BrokerLink
from ingress.bundler import Bundler
from ingress.detours import Detours
from ingress.forwarder import Forwarder
from ingress.idempotency import IdempotencyGuard
from ingress.metrics import PUBLISH_SECONDS, SPOOL_BACKLOG, SPOOLED, SUBMITS
from ingress.recorder import Recorder
from ingress.report_bundler import ReportBundler
from ingress.routing import Router
from ingress.spool import Spool, SpoolEntry, SpoolLock, claim_spool_file
from ingress.store_writer import StoreWriter
from ingress.tenant_guard import TenantGuard
from ingress.validation import ValidMessage
from shared.broker import Fate, Verdict
from shared.envelope import encode_job
from shared.errors import StoreUnavailable
from shared.logs import get_logger
from shared.model import Job
from shared.settings import Settings
from shared.store.engine import make_engine, make_sessionmaker, make_sync_sqlite_engine
from shared.store.idempotency import purge_expired
from shared.store.messages import row_for_job
from shared.topology import topology_from

log = get_logger("ingress")

QUEUED = "queued"  # confirmed by the broker
SPOOLED_AT = "spooled"  # fsynced in the local spool
STORE_CHECK_TIMEOUT_S = 1.0
STORE_CHECK_CACHE_S = 1.0
IDEMPOTENCY_PURGE_INTERVAL_S = 600.0
BUNDLES_IN_FLIGHT_MAX = 8

# Label children bound once: `.labels()` on every message was a measurable share of a submit's CPU.
SUBMITTED = {place: SUBMITS.labels(place) for place in (QUEUED, SPOOLED_AT)}
PUBLISH_TO_BROKER_SECONDS = PUBLISH_SECONDS.labels("broker")
PUBLISH_TO_SPOOL_SECONDS = PUBLISH_SECONDS.labels("spool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    id: str
    site: str
    durable_in: str  # QUEUED or SPOOLED_AT


class Ingress:
    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_engine(settings.store)
        self.sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(self.engine)
        self.router = Router(
            settings=settings.routing, sites=list(settings.sites), segment_limits=settings.segment_limits
        )
        self.keys = KeyCache(sessions=self.sessions)
        self.idempotency = IdempotencyGuard(
            sessions=self.sessions,
            ttl_s=settings.ingress.idempotency_ttl_s,
            lease_s=settings.ingress.idempotency_lease_s,
        )
        self.store_writer = StoreWriter(
            sessions=self.sessions,
            batch_max=settings.store.batch_max,
            sync_engine=make_sync_sqlite_engine(settings.store.url),
        )
        self.link = BrokerLink(
            settings=settings.broker,
            topology=topology_from(settings),
            name=f"relay-ingress {socket.gethostname()}:{os.getpid()}",
        )
        self.bundler = Bundler(
            publish=self._publish_bundle,
            bundle_max=settings.ingress.bundle_max,
            in_flight_max=BUNDLES_IN_FLIGHT_MAX,
        )
        self.reports = ReportBundler(
            publish=self.link.publish_reports,
            bundle_max=settings.ingress.bundle_max,
            in_flight_max=BUNDLES_IN_FLIGHT_MAX,
        )
        self.recorder = Recorder(
            sessions=self.sessions,
            prefix=settings.broker.prefix,
            confirm_timeout_s=settings.callbacks.confirm_timeout_s,
        )
        self.guard = TenantGuard(
            settings=settings.guard, sessions=self.sessions, prefix=settings.broker.prefix
        )
        self._spool_lock: SpoolLock | None = None
        self.spool: Spool | None = None
        self.forwarder: Forwarder | None = None
        self._store_ok: tuple[bool, float] = (False, 0.0)
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._spool_lock = claim_spool_file(self.settings.ingress.spool_path)
        self.spool = await Spool(path=self._spool_lock.path).open()
        SPOOL_BACKLOG.set(self.spool.backlog)
        if self.spool.backlog:
            log.warning("spool holds messages from before; forwarding", backlog=self.spool.backlog)
        self.store_writer.start()
        await self._check_store_schema()
        await self.guard.start()
        if self.settings.ingress.recorder:
            self.link.on_ready(self.recorder.start)
        await self.link.start()
        self.forwarder = Forwarder(
            spool=self.spool,
            link=self.link,
            spool_base=self.settings.ingress.spool_path,
            detours=Detours(sites=list(self.settings.sites), after_s=self.settings.ingress.detour_after_s),
            peers=self.settings.ingress.peer_spool_paths,
        )
        self.forwarder.start()
        self._purger = asyncio.create_task(
            purge_idempotency_keys(self.sessions, ttl_s=self.settings.ingress.idempotency_ttl_s),
            name="idempotency-purge",
        )
        log.info("ingress started", spool=str(self.spool.path), broker_ready=self.link.available)

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self.forwarder is not None:
            await self.forwarder.close()
        await self.recorder.close()
        await self.guard.stop()
        await self.bundler.close()
        await self.reports.close()
        await self.store_writer.close()
        await self.link.close()
        if self.spool is not None:
            await self.spool.close()
        if self._spool_lock is not None:
            self._spool_lock.release()
        await self.engine.dispose()
        log.info("ingress stopped", spool_backlog=self.spool_backlog)

    @property
    def spool_backlog(self) -> int:
        return self.spool.backlog if self.spool is not None else 0

    async def accept(
        self, tenant: str, messages: list[ValidMessage], *, message_ids: list[str], resent: bool = False
    ) -> list[Accepted]:
        """Make `messages` durable under `message_ids` and record them; the answer of a submit follows
        from the result. `resent`: the ids may have been published already (a repeat that took over an
        Idempotency-Key claim after its lease), so they leave marked as possible duplicates.
        `RateLimited` (nothing queued) when the tenant's limits refuse them."""
        async with self.guard.admit(tenant, len(messages)):
            return await self._accept(tenant, messages, message_ids, resent)

    async def _accept(
        self, tenant: str, messages: list[ValidMessage], message_ids: list[str], resent: bool
    ) -> list[Accepted]:
        now = time.time()
        jobs: list[tuple[Job, str]] = []
        for m, message_id in zip(messages, message_ids, strict=True):
            job = Job(
                id=message_id,
                tenant=tenant,
                to=m.to,
                sender=m.sender,
                body=m.body,
                reference=m.reference,
                accepted_at=now,
                expires_at=now + m.validity_s,
                segments=m.segments,
                encoding=m.encoding,
                callback_url=m.callback_url,
            )
            jobs.append((job, self.router.next_site(m.segments)))
        stored = self.store_writer.add([row_for_job(j, site=s) for j, s in jobs])
        try:
            places = await self._make_durable(self.guard.lanes(tenant, jobs), resent=resent)
        except BaseException:
            stored.cancel()
            raise
        await self._await_store(stored)
        accepted = [
            Accepted(id=job.id, site=site, durable_in=place)
            for (job, site), place in zip(jobs, places, strict=True)
        ]
        # Per message at DEBUG: the messages table is the record of every submit, and a line per
        # message at INFO cost about a third of the submit throughput (measured).
        for (job, site), place in zip(jobs, places, strict=True):
            SUBMITTED[place].inc()
            log.debug(
                "message accepted",
                id=job.id,
                tenant=tenant,
                to=job.to,
                body=job.body,
                segments=job.segments,
                site=site,
                durable_in=place,
            )
        return accepted

    async def _await_store(self, stored: asyncio.Future[None]) -> None:
        try:
            if not stored.done():
                async with asyncio.timeout(self.settings.ingress.store_wait_s):
                    await stored
            stored.result()
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("messages row not written yet; kept for retry", error=str(exc))

    async def _publish_bundle(self, body: bytes, site: str, message_id: str) -> Verdict:
        # A fresh job carries no delivery-state headers: a worker reads their absence as no attempts
        # yet, at the site of the queue (`workers.policy.DeliveryState.from_headers`), and the header
        # table was the costliest part of encoding a publish.
        return await self.link.publish_job(body=body, site=site, message_id=message_id, headers={})

    async def _make_durable(self, jobs: list[tuple[Job, str]], *, resent: bool) -> list[str]:
        places = [QUEUED] * len(jobs)
        spooled = _ToSpool()
        if resent:
            # A bundle carries no per-job mark; the spool's forwarder sends each job marked.
            for i, (job, site) in enumerate(jobs):
                spooled.add(i, job, site, maybe_sent=True)
        # While the spool has a backlog new messages queue behind it, so they leave in order of arrival.
        elif self.link.available and self.spool_backlog == 0:
            started = time.perf_counter()
            verdicts = [self.bundler.add(job, site) for job, site in jobs]
            # Bounds the wait for a free publish slot too, not only the broker's confirm.
            await asyncio.wait(verdicts, timeout=self.settings.broker.confirm_timeout_s)
            PUBLISH_TO_BROKER_SECONDS.observe(time.perf_counter() - started)
            for i, ((job, site), verdict) in enumerate(zip(jobs, verdicts, strict=True)):
                if verdict.done():
                    if verdict.result().confirmed:
                        continue
                    spooled.add(i, job, site, maybe_sent=verdict.result().fate is Fate.UNKNOWN)
                elif self.bundler.withdraw(verdict):
                    spooled.add(i, job, site)
                else:  # its bundle has left: spooled, and held until the verdict settles it
                    spooled.add(i, job, site, maybe_sent=True, awaiting=verdict)
            if spooled.count:
                log.warning(
                    "broker did not confirm in time; spooling",
                    count=spooled.count,
                    awaiting_confirm=len(spooled.held),
                )
        else:
            for i, (job, site) in enumerate(jobs):
                spooled.add(i, job, site)
        if spooled.count:
            for i in spooled.indexes:
                places[i] = SPOOLED_AT
            await self._spool(spooled)
        return places

    async def _spool(self, spooled: _ToSpool) -> None:
        assert self.spool is not None
        started = time.perf_counter()
        await asyncio.gather(
            self.spool.append(spooled.now),
            self.spool.append([e for e, _ in spooled.held], awaiting=[v for _, v in spooled.held]),
        )
        PUBLISH_TO_SPOOL_SECONDS.observe(time.perf_counter() - started)
        SPOOLED.inc(spooled.count)
        SPOOL_BACKLOG.set(self.spool_backlog)

    async def _check_store_schema(self) -> None:
        """Say so at start when the store is away or not migrated; the ingress runs on regardless,
        since the broker and the spool keep the durability promise."""
        try:
            async with asyncio.timeout(STORE_CHECK_TIMEOUT_S * 5):
                async with self.sessions() as session:
                    await session.execute(text("SELECT 1 FROM api_keys LIMIT 1"))
        except Exception as exc:
            log.error(
                "store unusable: API keys cannot be checked until it is (run `relay db upgrade`?)",
                error=repr(exc),
            )

    async def store_ok(self) -> bool:
        ok, checked_at = self._store_ok
        now = time.monotonic()
        if now - checked_at < STORE_CHECK_CACHE_S:
            return ok
        try:
            async with asyncio.timeout(STORE_CHECK_TIMEOUT_S):
                async with self.sessions() as session:
                    await session.execute(text("SELECT 1"))
            ok = True
        except Exception:
            ok = False
        self._store_ok = (ok, now)
        return ok

    def readiness(self) -> dict[str, Any]:
        return {"broker": "ok" if self.link.available else "down", "spool_backlog": self.spool_backlog}


class _ToSpool:
    """The jobs of one submit that go to the spool: now, or held beside a publish still in flight."""

    def __init__(self) -> None:
        self.indexes: list[int] = []
        self.now: list[SpoolEntry] = []
        self.held: list[tuple[SpoolEntry, asyncio.Future[Verdict]]] = []

    @property
    def count(self) -> int:
        return len(self.indexes)

    def add(
        self,
        index: int,
        job: Job,
        site: str,
        *,
        maybe_sent: bool = False,
        awaiting: asyncio.Future[Verdict] | None = None,
    ) -> None:
        self.indexes.append(index)
        entry = SpoolEntry(
            message_id=job.id, routing_key=site, headers={}, body=encode_job(job), maybe_sent=maybe_sent
        )
        if awaiting is None:
            self.now.append(entry)
        else:
            self.held.append((entry, awaiting))


@contextlib.asynccontextmanager
async def running(settings: Settings):  # type: ignore[no-untyped-def]
    ingress = Ingress(settings=settings)
    await ingress.start()
    try:
        yield ingress
    finally:
        await ingress.stop()


async def purge_idempotency_keys(sessions: async_sessionmaker[AsyncSession], *, ttl_s: int) -> None:
    """Delete expired Idempotency-Keys every `IDEMPOTENCY_PURGE_INTERVAL_S`, for ever."""
    while True:
        try:
            async with sessions.begin() as session:
                purged = await purge_expired(session, ttl_s=ttl_s)
            if purged:
                log.info("expired idempotency keys purged", count=purged)
        except Exception as exc:
            log.warning("purging idempotency keys failed", error=repr(exc))
        await asyncio.sleep(IDEMPOTENCY_PURGE_INTERVAL_S)
