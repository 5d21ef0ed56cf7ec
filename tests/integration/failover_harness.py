"""A two-site relay on this machine for worker and failover tests: real simulators, real workers, real broker.

Jobs are published straight to the jobs exchange, as the ingress does; what arrived is read from the
simulators' admin APIs, what the workers decided from the events and dead-letter queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from shared.broker import ConfirmedPublisher
from shared.envelope import (
    H_ATTEMPT,
    H_ORIGIN,
    H_SITE,
    H_SITE_ATTEMPT,
    decode_dead,
    decode_events,
    encode_job,
    encode_jobs,
)
from shared.model import AttemptRecord, Job, Outcome, Status, new_message_id
from shared.settings import load_settings
from shared.topology import dead_queue, declare, events_queue, jobs_exchange, site_queue, topology_from
from tests.helpers import RELAY, delete_broker_names, free_port, spawned, wait_for_port

SITES = ("a", "b")

STREAM_GROUP = 10  # jobs a stream publishes at once (bundled: one bundle per site)
FAST_WORKER = {
    "concurrency": 16,
    "heartbeat_interval_s": 0.5,
    "breaker_failure_threshold": 3,
    "breaker_cooldown_s": 1.0,
    "attempts_per_site": 2,
    "max_attempts": 10,
    "retry_delays_s": [1, 2],
    "grace_s": 5.0,
    "metrics_port": 0,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class Simulator:
    site: str
    port: int
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1.0/message"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, self.admin_url + path, json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self._admin("GET", "/stats")
        return result

    def references(self) -> list[str]:
        result: list[str] = self._admin("GET", "/references")["references"]
        return result

    def fault(self, mode: str, **options: Any) -> None:
        self._admin("POST", "/faults", {"mode": mode, **options})

    def reset(self) -> None:
        self._admin("POST", "/reset")


@dataclass
class Relay:
    """Config, simulators and workers of one test."""

    tmp: Path
    broker_url: str
    prefix: str
    config: Path
    sims: dict[str, Simulator]
    stack: contextlib.ExitStack
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: dict[int, int] = field(default_factory=dict)  # worker pid -> its metrics port

    def start_worker(
        self, site: str, *, concurrency: int | None = None, metrics_port: int = 0
    ) -> subprocess.Popen[bytes]:
        args = [*RELAY, "--config", str(self.config), "worker", "--site", site]
        args += ["--metrics-port", str(metrics_port)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        log = self.tmp / f"worker-{site}-{len(self.workers)}.log"
        proc = self.stack.enter_context(spawned(args, log=log))
        self.workers.append(proc)
        if metrics_port:
            self.metrics_ports[proc.pid] = metrics_port
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("*.log")))


@contextlib.contextmanager
def relay(
    tmp: Path,
    *,
    broker_url: str,
    prefix: str,
    worker: dict[str, Any] | None = None,
    site: dict[str, Any] | None = None,
    site_overrides: dict[str, dict[str, Any]] | None = None,
) -> Iterator[Relay]:
    """Two simulators (sites a and b) and a config naming them; workers are started by the test."""
    with contextlib.ExitStack() as stack:
        sims = {name: Simulator(site=name, port=free_port(), admin_port=free_port()) for name in SITES}
        for sim in sims.values():
            sim.proc = stack.enter_context(
                spawned(
                    [*RELAY, "platform-sim", "--port", str(sim.port), "--admin-port", str(sim.admin_port)],
                    log=tmp / f"sim-{sim.site}.log",
                )
            )
        sections: dict[str, dict[str, Any]] = {
            "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 2.0},
            "log": {"level": "WARNING", "json": True},
            "worker": {**FAST_WORKER, **(worker or {})},
        }
        for name, sim in sims.items():
            sections[f"sites.{name}"] = {
                "url": sim.url,
                "sim_admin_url": sim.admin_url,
                "timeout_s": 1.0,
                **(site or {}),
                **((site_overrides or {}).get(name, {})),
            }
        config = write_toml(tmp / "relay.toml", sections)
        for sim in sims.values():
            wait_for_port(sim.admin_port)
            wait_for_port(sim.port)
        yield Relay(tmp=tmp, broker_url=broker_url, prefix=prefix, config=config, sims=sims, stack=stack)


def settings_of(config: Path) -> Any:
    from shared.settings import use_config_file

    use_config_file(config)
    try:
        return load_settings()
    finally:
        use_config_file(None)


def make_job(*, validity_s: float = 300.0, to: str = "+31612345678") -> Job:
    now = time.time()
    return Job(
        id=new_message_id(),
        tenant="test",
        to=to,
        sender="Relay",
        body="failover test",
        accepted_at=now,
        expires_at=now + validity_s,
    )


def rejected_for_good(reference: str, share: float) -> bool:
    """The simulator's own rule for which references a `reject` fault refuses."""
    return share > 0 and zlib.crc32(reference.encode()) / 2**32 < share


class JobPublisher:
    """Publishes jobs persistent, mandatory and confirmed: one per message with its delivery headers at
    zero, or with `bundled` a stream's jobs for one site together as one bundle per group and no headers,
    as the ingress publishes concurrent submits."""

    def __init__(self, broker_url: str, prefix: str, config: Path, *, bundled: bool = False) -> None:
        self.bundled = bundled
        self._broker_url = broker_url
        self._prefix = prefix
        self._settings = settings_of(config)
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self.published: list[Job] = []
        self.site_of: dict[str, str] = {}
        self.records: list[AttemptRecord] = []
        self.dead: list[tuple[Job, dict[str, Any]]] = []

    async def __aenter__(self) -> JobPublisher:
        self._connection = await aio_pika.connect_robust(self._broker_url)
        self._publisher = await ConfirmedPublisher.open(self._connection, confirm_timeout_s=5.0)
        await declare(self._publisher.channel, topology_from(self._settings))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def reconnected(self, *, timeout_s: float = 30.0) -> None:
        """Wait until the robust connection is back after the broker went away."""
        assert self._connection is not None
        async with asyncio.timeout(timeout_s):
            await self._connection.ready()

    async def publish(self, job: Job, *, site: str) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            encode_job(job),
            exchange=jobs_exchange(self._prefix),
            routing_key=site,
            message_id=job.id,
            headers={H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: site, H_ORIGIN: site},
        )
        self.published.append(job)
        self.site_of[job.id] = site

    async def publish_bundle(self, jobs: list[Job], *, site: str) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            encode_jobs(jobs), exchange=jobs_exchange(self._prefix), routing_key=site, message_id=jobs[0].id
        )
        self.published.extend(jobs)
        self.site_of.update(dict.fromkeys((job.id for job in jobs), site))

    async def stream(
        self,
        count: int,
        *,
        rate_per_s: float,
        sites: tuple[str, ...] = SITES,
        make: Callable[[], Job] = make_job,
    ) -> None:
        """Publish `count` jobs spread over the sites at about `rate_per_s` (in small confirmed groups)."""
        group = STREAM_GROUP
        interval_s = group / rate_per_s
        for start in range(0, count, group):
            began = time.monotonic()
            jobs = [make() for _ in range(min(group, count - start))]
            if self.bundled:
                await asyncio.gather(
                    *(
                        self.publish_bundle(jobs[i :: len(sites)], site=site)
                        for i, site in enumerate(sites)
                        if jobs[i :: len(sites)]
                    )
                )
            else:
                await asyncio.gather(
                    *(self.publish(job, site=sites[(start + i) % len(sites)]) for i, job in enumerate(jobs))
                )
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - began)))

    async def consumer_count(self, site: str) -> int:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(site_queue(self._prefix, site), passive=True)
            return int(queue.declaration_result.consumer_count or 0)
        finally:
            await channel.close()

    async def queue_depth(self, name: str) -> int:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def drain(self, name: str) -> list[bytes]:
        """Every message now in queue `name` (taken and acked)."""
        assert self._connection is not None
        bodies: list[bytes] = []
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            while True:
                message = await queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    return bodies
                bodies.append(message.body)
                await message.ack()
        finally:
            await channel.close()

    async def events(self) -> list[AttemptRecord]:
        """Every attempt record so far about a job this publisher published."""
        mine = {job.id for job in self.published}
        for body in await self.drain(events_queue(self._prefix)):
            self.records.extend(r for r in decode_events(body) if r.message_id in mine)
        return list(self.records)

    async def dead_letters(self) -> list[tuple[Job, dict[str, Any]]]:
        """Every dead letter so far of a job this publisher published."""
        mine = {job.id for job in self.published}
        for body in await self.drain(dead_queue(self._prefix)):
            job, verdict = decode_dead(body)
            if job.id in mine:
                self.dead.append((job, verdict))
        return list(self.dead)

    async def final_statuses(self) -> dict[str, list[Status]]:
        finals: dict[str, list[Status]] = {}
        for record in await self.events():
            if record.status is not None and record.status.terminal:
                finals.setdefault(record.message_id, []).append(record.status)
        return finals

    async def wait_all_final(self, *, timeout_s: float) -> bool:
        """Wait until every published job has a terminal status in the events."""

        async def done() -> bool:
            finals = await self.final_statuses()
            return all(job.id in finals for job in self.published)

        return await wait_until(done, timeout_s=timeout_s, interval_s=0.25)


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval_s)
    return False


async def wait_for_consumers(
    jobs: JobPublisher, expected: dict[str, int], *, timeout_s: float = 20.0
) -> None:
    async def ready() -> bool:
        counts = {site: await jobs.consumer_count(site) for site in expected}
        return all(counts[site] >= n for site, n in expected.items())

    if not await wait_until(ready, timeout_s=timeout_s, interval_s=0.2):
        raise TimeoutError(f"workers did not start consuming {expected} within {timeout_s} s")


@dataclass(frozen=True)
class Tally:
    published: int
    expected: int  # published minus the ids expected to end elsewhere (dead letters)
    delivered: int  # distinct expected ids some platform received
    lost: list[str]
    cross_site: set[str]  # ids received by both platforms
    within_site: dict[str, int]  # site -> repeated receipts at that platform
    ambiguous_ids: set[str]  # ids with an ambiguous attempt in the events
    ambiguous_at: dict[str, int]  # site -> ambiguous attempts there

    def assert_no_loss_and_only_ambiguous_duplicates(self, *, extra_allowed: int = 0) -> None:
        """Nothing lost; every duplicate traces to an ambiguous attempt (plus `extra_allowed` others)."""
        assert not self.lost, f"{len(self.lost)} of {self.expected} jobs never reached a platform"
        unexplained = len(self.cross_site - self.ambiguous_ids)
        for site, repeats in self.within_site.items():
            unexplained += max(0, repeats - self.ambiguous_at.get(site, 0))
        assert unexplained <= extra_allowed, (
            f"{unexplained} duplicates without an ambiguous attempt (allowed {extra_allowed}): "
            f"cross-site {len(self.cross_site)}, within-site {self.within_site}, "
            f"ambiguous at {self.ambiguous_at}"
        )


def tally(
    published: list[Job],
    sims: dict[str, Simulator],
    records: list[AttemptRecord],
    *,
    excluded: set[str] | None = None,
) -> Tally:
    """Count delivered, lost and duplicated jobs; `excluded` ids (dead letters) are not expected at all."""
    excluded = excluded or set()
    seen: dict[str, set[str]] = {}
    within: dict[str, int] = {}
    for site, sim in sims.items():
        seen[site] = set(sim.references())
        within[site] = sim.stats()["duplicates"]
    received = set().union(*seen.values())
    ids = [job.id for job in published if job.id not in excluded]
    lost = [i for i in ids if i not in received]
    sites = list(seen)
    cross = set.intersection(*(seen[s] for s in sites)) if len(sites) > 1 else set()
    ambiguous = [r for r in records if r.outcome is Outcome.AMBIGUOUS]
    ambiguous_at: dict[str, int] = {}
    for record in ambiguous:
        ambiguous_at[record.site] = ambiguous_at.get(record.site, 0) + 1
    return Tally(
        published=len(published),
        expected=len(ids),
        delivered=len(ids) - len(lost),
        lost=lost,
        cross_site=cross,
        within_site=within,
        ambiguous_ids={r.message_id for r in ambiguous},
        ambiguous_at=ambiguous_at,
    )


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


async def delete_topology(broker_url: str, config: Path) -> None:
    await delete_broker_names(broker_url, settings_of(config))


@contextlib.asynccontextmanager
async def running_relay(
    tmp: Path, *, broker_url: str, workers: dict[str, int], metrics: bool = False, **options: Any
) -> AsyncIterator[Relay]:
    """Simulators plus `workers[site]` worker processes per site, consuming; the topology deleted after."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with relay(tmp, broker_url=broker_url, prefix=prefix, **options) as r:
        try:
            async with JobPublisher(broker_url, prefix, r.config) as jobs:
                for site, count in workers.items():
                    for _ in range(count):
                        r.start_worker(site, metrics_port=free_port() if metrics else 0)
                # Every worker consumes every site's queue (own or standby).
                total = sum(workers.values())
                await wait_for_consumers(jobs, dict.fromkeys(SITES, total), timeout_s=40)
            yield r
        finally:
            for proc in r.workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            await delete_topology(broker_url, r.config)


def publisher(r: Relay, *, bundled: bool = False) -> JobPublisher:
    return JobPublisher(r.broker_url, r.prefix, r.config, bundled=bundled)


async def all_consuming(r: Relay, *, timeout_s: float = 20.0) -> None:
    """Wait until every live worker consumes every site's queue again (breakers closed or half-open)."""
    alive = sum(1 for proc in r.workers if proc.poll() is None)
    async with publisher(r) as jobs:
        await wait_for_consumers(jobs, dict.fromkeys(SITES, alive), timeout_s=timeout_s)


def close_broker_connection_of(pid: int) -> bool:
    """Have RabbitMQ close the AMQP connection of the worker with this pid (as a broker restart would).

    Uses `rabbitmqctl`, so it only touches that one connection of the shared local broker.
    """
    import shutil

    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return False
    listing = subprocess.run(
        [rabbitmqctl, "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    marker = f':{pid}"'
    names = [line.split("\t", 1)[0] for line in listing.stdout.splitlines() if marker in line]
    for name in names:
        subprocess.run(
            [rabbitmqctl, "-q", "close_connection", name, "connection-loss test"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    return bool(names)
