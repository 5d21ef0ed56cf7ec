"""`relay status`: what each site is doing now, read from the broker, the workers' heartbeats, the ingress
and the store. Every source may be down; the snapshot says which and shows the rest.

The heartbeats are kept by `ops.status_heartbeats`, the snapshot is `ops.status_model`'s, and
`ops.status_render` writes it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import httpx
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ops.status_cluster import read_cluster
from ops.status_heartbeats import HeartbeatCollector, WorkerView, circuit_summary
from ops.status_model import UNKNOWN, SiteView, Snapshot
from ops.store_access import STORE_ERRORS, require_store, store_error
from shared.broker import connect
from shared.errors import RelayError, StoreUnavailable
from shared.model import Outcome
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import DeadFilter
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.models import Attempt, utcnow
from shared.store.report_rows import unmatched_count
from shared.topology import delay_queue, site_queue

Depths = dict[str, tuple[int | None, int | None]]  # queue name: (ready, consumers)

RATE_WINDOW_S = 60.0


def readyz_url(config: Settings) -> str:
    host = config.ingress.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening on every address: ask on the loopback one
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.ingress.port}/readyz"


async def read_ingress(config: Settings, *, client: httpx.AsyncClient) -> dict[str, Any]:
    """The ingress's own view (/readyz); its spool backlog is "unknown" when it cannot be asked."""
    try:
        response = await client.get(readyz_url(config))
        data = response.json()
        backlog = data.get("spool_backlog")
        return {
            "reachable": True,
            "ready": bool(data.get("ready")),
            "broker": data.get("broker", UNKNOWN),
            "store": data.get("store", UNKNOWN),
            "spool_backlog": backlog if isinstance(backlog, int) else UNKNOWN,
        }
    except (httpx.HTTPError, ValueError, AttributeError):
        return {"reachable": False, "ready": None, "spool_backlog": UNKNOWN}


class StatusReader:
    """Holds the connections of one `relay status` run; `snapshot()` may be called again and again."""

    def __init__(self, *, config: Settings) -> None:
        self._config = config
        self._collector = HeartbeatCollector(max_age_s=3 * config.worker.heartbeat_interval_s + 1.0)
        self._connection: AbstractRobustConnection | None = None
        self._listening = False  # bound to the heartbeat exchange
        self._broker_error: str | None = None
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._http = httpx.AsyncClient(timeout=1.0)

    async def open(self) -> None:
        await self._ensure_broker()
        self._engine = make_engine(self._config.store)
        self._sessions = make_sessionmaker(self._engine)

    async def close(self) -> None:
        await self._http.aclose()
        if self._connection is not None:
            # Bounded: an interrupted status must not hang on a broker that stopped answering.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout=2.0)
        if self._engine is not None:
            await self._engine.dispose()

    @property
    def warm_up_s(self) -> float:
        """How long to listen before the first snapshot: every live worker will have sent a heartbeat."""
        return self._config.worker.heartbeat_interval_s + 0.5 if self._listening else 0.0

    async def _ensure_broker(self) -> None:
        try:
            if self._connection is None:
                self._connection = await connect(self._config.broker, name="relay-status")
            if not self._listening:
                self._listening = await self._collector.start(
                    self._connection, prefix=self._config.broker.prefix
                )
            self._broker_error = None
        except (RelayError, AMQPError, OSError, TimeoutError, RuntimeError) as exc:
            self._broker_error = str(exc)
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._connection.close(), timeout=2.0)
            self._connection = None
            self._listening = False

    async def snapshot(self) -> Snapshot:
        await self._ensure_broker()
        config = self._config
        workers = self._collector.views(now_s=time.time())
        depths: Depths = await self._queue_depths() if self._connection is not None else {}
        store_state, store_err, dead, store_rates, unmatched = await self._store_view()
        return Snapshot(
            at=utcnow().isoformat(timespec="seconds"),
            prefix=config.broker.prefix,
            broker="ok" if self._connection is not None else "down",
            broker_error=self._broker_error,
            store=store_state,
            store_error=store_err,
            ingress=await read_ingress(config, client=self._http),
            sites=[
                self._site_view(name, workers.get(name, []), depths, store_rates.get(name))
                for name in config.site_names
            ],
            dead_letters=dead,
            cluster=await read_cluster(config.broker, client=self._http),
            reports_unmatched=unmatched,
        )

    def _site_view(
        self, name: str, workers: list[WorkerView], depths: Depths, store_rate: float | None
    ) -> SiteView:
        prefix = self._config.broker.prefix
        ready, consumers = depths.get(site_queue(prefix, name), (None, None))
        rates = [w.delivered_per_s for w in workers if w.delivered_per_s is not None]
        rate: float | None = round(sum(rates), 2) if rates else None
        source = "heartbeats" if rates else None
        if rate is None and store_rate is not None:
            rate, source = store_rate, "store"
        return SiteView(
            name=name,
            queue=site_queue(prefix, name),
            ready=ready,
            consumers=consumers,
            unacked=sum(w.in_flight for w in workers),
            delay_queues={
                f"{delay_s}s": depths.get(delay_queue(prefix, name, delay_s), (None, None))[0]
                for delay_s in self._config.worker.retry_delays_s
            },
            circuit=circuit_summary(workers),
            workers=workers,
            delivered_per_s=rate,
            rate_source=source,
        )

    async def _queue_depths(self) -> Depths:
        """(ready, consumers) of every site and delay queue, by passive declares (they create nothing)."""
        prefix, delays_s = self._config.broker.prefix, self._config.worker.retry_delays_s
        names = []
        for site in self._config.site_names:
            names.append(site_queue(prefix, site))
            names.extend(delay_queue(prefix, site, delay_s) for delay_s in delays_s)
        depths: Depths = {}
        try:
            # Bounded: a broker that stops answering half-way must not hold up a watch for ever.
            async with asyncio.timeout(self._config.broker.connect_timeout_s):
                await self._declare_passively(names, depths)
        except (AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            self._broker_error = f"lost the broker: {exc!r}"
        return depths

    async def _declare_passively(self, names: list[str], depths: Depths) -> None:
        assert self._connection is not None
        channel = None
        try:
            for name in names:
                if channel is None or channel.is_closed:
                    channel = await self._connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except AMQPError:
                    depths[name] = (None, None)  # not declared yet; the failed declare closed the channel
                    channel = None
                    continue
                result = queue.declaration_result
                depths[name] = (result.message_count, result.consumer_count)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(channel.close(), timeout=2.0)

    async def _store_view(self) -> tuple[str, str | None, dict[str, Any], dict[str, float], int | str]:
        assert self._sessions is not None
        unknown: dict[str, Any] = {"total": UNKNOWN, "by_reason": {}}
        try:
            require_store(self._config.store)  # before a session: it would create an empty SQLite file
        except StoreUnavailable as exc:
            return "down", str(exc), unknown, {}, UNKNOWN
        try:
            async with self._sessions() as session:
                counts = await dead_letters.counts_by_reason(session, DeadFilter())
                since = utcnow() - timedelta(seconds=RATE_WINDOW_S)
                rows = await session.execute(
                    select(Attempt.site, func.count())
                    .where(Attempt.at >= since, Attempt.outcome == Outcome.ACCEPTED.value)
                    .group_by(Attempt.site)
                )
                rates = dict.fromkeys(self._config.site_names, 0.0)
                rates.update({site: round(n / RATE_WINDOW_S, 2) for site, n in rows.all()})
                unmatched = await unmatched_count(session)
        except STORE_ERRORS as exc:
            return "down", str(store_error(exc)), unknown, {}, UNKNOWN
        return "ok", None, {"total": sum(counts.values()), "by_reason": counts}, rates, unmatched
