"""`relay status`: what each site is doing now, read from the broker, the workers' heartbeats, the ingress
and the store. Every source may be down; the snapshot says which and shows the rest."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import AMQPError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ops.store_access import STORE_ERRORS, store_error
from shared.broker import connect
from shared.envelope import decode_heartbeat
from shared.errors import EnvelopeError, RelayError
from shared.model import CircuitState, Heartbeat, Outcome
from shared.settings import Settings
from shared.store import dead_letters
from shared.store.dead_letters import DeadFilter
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.models import Attempt, utcnow
from shared.topology import delay_queue, heartbeat_exchange, site_queue

UNKNOWN = "unknown"
RATE_WINDOW_S = 60.0


@dataclass(slots=True, kw_only=True)
class WorkerView:
    worker: str
    circuit: str
    in_flight: int
    concurrency: int
    delivered_total: int
    failed_over_total: int
    age_s: float  # since its last heartbeat
    delivered_per_s: float | None  # from its last two heartbeats
    problem: str | None = None  # why its platform cannot take traffic


@dataclass(slots=True, kw_only=True)
class SiteView:
    name: str
    queue: str
    ready: int | None  # None: the queue could not be read
    consumers: int | None
    unacked: int  # held by this site's workers (their heartbeats' in_flight)
    delay_queues: dict[str, int | None]
    circuit: str
    workers: list[WorkerView] = field(default_factory=list)
    delivered_per_s: float | None = None
    rate_source: str | None = None  # "heartbeats" or "store"


@dataclass(slots=True, kw_only=True)
class Snapshot:
    at: str
    prefix: str
    broker: str  # "ok" | "down"
    broker_error: str | None
    store: str
    store_error: str | None
    ingress: dict[str, Any]
    sites: list[SiteView]
    dead_letters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeartbeatCollector:
    """Keeps the last two heartbeats of every worker, from an exclusive queue bound to the fanout."""

    def __init__(self, *, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._beats: dict[str, deque[Heartbeat]] = {}

    async def start(self, connection: AbstractRobustConnection, *, prefix: str) -> bool:
        """Listen, if the exchange exists (workers declare it); False when it does not exist yet."""
        channel = await connection.channel()
        try:
            # Passive: a status pointed at a wrong prefix must not leave an exchange behind.
            exchange = await channel.get_exchange(heartbeat_exchange(prefix), ensure=True)
        except AMQPError:
            return False  # the failed passive declare closed that channel
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_message)
        return True

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            try:
                beat = decode_heartbeat(message.body)
            except EnvelopeError:
                return  # a beat from a newer or broken worker is not worth failing the status over
            self.add(beat)

    def add(self, beat: Heartbeat) -> None:
        self._beats.setdefault(beat.worker, deque(maxlen=2)).append(beat)

    def views(self, *, now_s: float) -> dict[str, list[WorkerView]]:
        by_site: dict[str, list[WorkerView]] = {}
        for beats in self._beats.values():
            last = beats[-1]
            age_s = max(now_s - last.at, 0.0)
            if age_s > self._max_age_s:
                continue  # a worker silent this long is gone
            rate = None
            if len(beats) == 2 and last.at > beats[0].at:
                rate = max(last.delivered_total - beats[0].delivered_total, 0) / (last.at - beats[0].at)
            by_site.setdefault(last.site, []).append(
                WorkerView(
                    worker=last.worker,
                    circuit=last.circuit,
                    in_flight=last.in_flight,
                    concurrency=last.concurrency,
                    delivered_total=last.delivered_total,
                    failed_over_total=last.failed_over_total,
                    age_s=round(age_s, 1),
                    delivered_per_s=None if rate is None else round(rate, 2),
                    problem=last.problem,
                )
            )
        for views in by_site.values():
            views.sort(key=lambda v: v.worker)
        return by_site


def circuit_summary(workers: list[WorkerView]) -> str:
    """`closed` when all are; else each state with how many workers are in it, worst first."""
    if not workers:
        return "no workers"
    states = [w.circuit for w in workers]
    if all(s == CircuitState.CLOSED for s in states):
        return CircuitState.CLOSED.value
    order = [CircuitState.OPEN.value, CircuitState.HALF_OPEN.value, CircuitState.CLOSED.value]
    parts = [f"{state} {states.count(state)}/{len(states)}" for state in order if state in states]
    problems = sorted({w.problem for w in workers if w.problem and w.circuit != CircuitState.CLOSED})
    return ", ".join(parts) + "".join(f": {problem}" for problem in problems)


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

    async def warm_up(self) -> None:
        """Wait long enough for every live worker to have sent a heartbeat."""
        if self._listening:
            await asyncio.sleep(self._config.worker.heartbeat_interval_s + 0.5)

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
        depths: dict[str, tuple[int | None, int | None]] = {}
        if self._connection is not None:
            depths = await self._queue_depths()
        store_state, store_err, dead, store_rates = await self._store_view()
        sites = []
        for name in config.site_names:
            site_workers = workers.get(name, [])
            ready, consumers = depths.get(site_queue(config.broker.prefix, name), (None, None))
            rates = [w.delivered_per_s for w in site_workers if w.delivered_per_s is not None]
            rate: float | None = round(sum(rates), 2) if rates else None
            source = "heartbeats" if rates else None
            if rate is None and name in store_rates:
                rate, source = store_rates[name], "store"
            sites.append(
                SiteView(
                    name=name,
                    queue=site_queue(config.broker.prefix, name),
                    ready=ready,
                    consumers=consumers,
                    unacked=sum(w.in_flight for w in site_workers),
                    delay_queues={
                        f"{delay_s}s": depths.get(delay_queue(config.broker.prefix, name, delay_s), (None,))[
                            0
                        ]
                        for delay_s in config.worker.retry_delays_s
                    },
                    circuit=circuit_summary(site_workers),
                    workers=site_workers,
                    delivered_per_s=rate,
                    rate_source=source,
                )
            )
        return Snapshot(
            at=utcnow().isoformat(timespec="seconds"),
            prefix=config.broker.prefix,
            broker="ok" if self._connection is not None else "down",
            broker_error=self._broker_error,
            store=store_state,
            store_error=store_err,
            ingress=await read_ingress(config, client=self._http),
            sites=sites,
            dead_letters=dead,
        )

    async def _queue_depths(self) -> dict[str, tuple[int | None, int | None]]:
        """(ready, consumers) of every site and delay queue, by passive declares (they create nothing)."""
        assert self._connection is not None
        config = self._config
        names = []
        for site in config.site_names:
            names.append(site_queue(config.broker.prefix, site))
            names.extend(delay_queue(config.broker.prefix, site, d) for d in config.worker.retry_delays_s)
        depths: dict[str, tuple[int | None, int | None]] = {}
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
        except (AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            self._broker_error = f"lost the broker: {exc!r}"
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return depths

    async def _store_view(self) -> tuple[str, str | None, dict[str, Any], dict[str, float]]:
        assert self._sessions is not None
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
        except STORE_ERRORS as exc:
            return "down", str(store_error(exc)), {"total": UNKNOWN, "by_reason": {}}, {}
        return "ok", None, {"total": sum(counts.values()), "by_reason": counts}, rates


# --- rendering ------------------------------------------------------------------------------------------


def _num(value: int | float | str | None) -> str:
    return "?" if value is None else str(value)


def _rate(site: SiteView) -> str:
    if site.delivered_per_s is None:
        return "-"
    return f"{site.delivered_per_s:g}/s ({site.rate_source})"


def _delays(site: SiteView) -> str:
    return " ".join(f"{tier}:{_num(n)}" for tier, n in site.delay_queues.items())


def _headline(snap: Snapshot) -> str:
    ingress = snap.ingress
    if ingress.get("reachable"):
        ingress_text = "ready" if ingress.get("ready") else "NOT READY"
    else:
        ingress_text = "unreachable"
    return (
        f"broker {snap.broker}  store {snap.store}  ingress {ingress_text}  "
        f"spool backlog {ingress.get('spool_backlog', UNKNOWN)}  (prefix {snap.prefix}, {snap.at})"
    )


def _dead_text(snap: Snapshot) -> str:
    by_reason = snap.dead_letters.get("by_reason") or {}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items()))
    return f"dead letters {snap.dead_letters.get('total')}" + (f" ({detail})" if detail else "")


def render_plain(snap: Snapshot) -> str:
    lines = [_headline(snap)]
    for error in (snap.broker_error, snap.store_error):
        if error:
            lines.append(f"  ! {error}")
    for site in snap.sites:
        lines.append(
            f"site {site.name}: queue {site.queue} ready {_num(site.ready)} unacked {site.unacked} "
            f"consumers {_num(site.consumers)} delay {_delays(site)} circuit {site.circuit} "
            f"workers {len(site.workers)} delivered {_rate(site)}"
        )
        for worker in site.workers:
            lines.append(
                f"  worker {worker.worker} circuit {worker.circuit} in-flight {worker.in_flight}/"
                f"{worker.concurrency} delivered {worker.delivered_total} "
                f"failed-over {worker.failed_over_total} seen {worker.age_s}s ago"
            )
    lines.append(_dead_text(snap))
    return "\n".join(lines)


def render_rich(snap: Snapshot) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="sites", expand=False)
    for name in ("site", "ready", "unacked", "consumers", "delay queues", "circuit", "workers", "delivered"):
        table.add_column(name, justify="right" if name in ("ready", "unacked", "consumers") else "left")
    for site in snap.sites:
        circuit_style = "green" if site.circuit == "closed" else "red"
        table.add_row(
            site.name,
            _num(site.ready),
            str(site.unacked),
            _num(site.consumers),
            _delays(site),
            Text(site.circuit, style=circuit_style),
            str(len(site.workers)),
            _rate(site),
        )
    parts: list[Any] = [Text(_headline(snap), style="bold")]
    for error in (snap.broker_error, snap.store_error):
        if error:
            parts.append(Text(error, style="red"))
    parts.append(table)
    parts.append(Text(_dead_text(snap)))
    return Group(*parts)
