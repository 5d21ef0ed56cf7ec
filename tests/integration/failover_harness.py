"""A two-site relay on this machine for worker and failover tests: real simulators, real workers, real broker.

Built on `ops.harness`, the harness `relay drill` and the benchmarks use too. Jobs are published straight
to the jobs exchange, as the ingress does; what arrived is read from the simulators' admin APIs, what the
workers decided from the events and dead-letter queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.harness.deployment import SITES, delete_topology, local_config
from ops.harness.jobs import (
    STREAM_GROUP,
    JobPublisher,
    make_job,
    wait_for_consumers,
    wait_until,
)
from ops.harness.processes import RELAY, free_port, sigkill, spawned
from ops.harness.simulators import LocalSimulator, running_simulators
from shared.model import AttemptRecord, Job

__all__ = [
    "FAST_WORKER",
    "STREAM_GROUP",
    "JobPublisher",
    "Relay",
    "Tally",
    "all_consuming",
    "close_broker_connection_of",
    "delete_topology",
    "make_job",
    "publisher",
    "rejected_for_good",
    "relay",
    "running_relay",
    "sigkill",
    "tally",
    "wait_for_consumers",
    "wait_until",
]

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
# A stopping worker finishes or hands back what it holds within its grace_s; then some margin.
WORKER_STOP_TIMEOUT_S = 15.0


@dataclass
class Relay:
    """Config, simulators and workers of one test."""

    tmp: Path
    broker_url: str
    prefix: str
    config: Path
    sims: dict[str, LocalSimulator]
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
        sims = stack.enter_context(running_simulators(SITES, log_dir=tmp))
        sites = {
            name: {"url": sim.url, "timeout_s": 1.0, **(site or {}), **(site_overrides or {}).get(name, {})}
            for name, sim in sims.items()
        }
        config = local_config(
            tmp, broker_url=broker_url, prefix=prefix, sites=sites, worker={**FAST_WORKER, **(worker or {})}
        )
        yield Relay(tmp=tmp, broker_url=broker_url, prefix=prefix, config=config, sims=sims, stack=stack)


def rejected_for_good(reference: str, share: float) -> bool:
    """The simulator's own rule for which references a `reject` fault refuses."""
    return share > 0 and zlib.crc32(reference.encode()) / 2**32 < share


@dataclass(frozen=True)
class Tally:
    published: int
    expected: int  # published minus the ids expected to end elsewhere (dead letters)
    delivered: int  # distinct expected ids some platform received
    lost: list[str]
    cross_site: set[str]  # ids received by both platforms
    within_site: dict[str, int]  # site -> repeated receipts at that platform
    marked_ids: set[str]  # ids with an attempt marked as a possible duplicate (ambiguous or resent)
    marked_at: dict[str, int]  # site -> such attempts there

    def assert_no_loss_and_only_marked_duplicates(self) -> None:
        """Nothing lost, and every extra copy a platform received is matched by a possible-duplicate mark:
        an ambiguous attempt, or a resend the worker marked (after a redelivery or a repeated publish)."""
        assert not self.lost, f"{len(self.lost)} of {self.expected} jobs never reached a platform"
        unmarked = len(self.cross_site - self.marked_ids)
        for site, repeats in self.within_site.items():
            unmarked += max(0, repeats - self.marked_at.get(site, 0))
        assert unmarked == 0, (
            f"{unmarked} duplicates without a possible-duplicate mark: "
            f"cross-site {len(self.cross_site)}, within-site {self.within_site}, marked at {self.marked_at}"
        )


def tally(
    published: list[Job],
    sims: dict[str, LocalSimulator],
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
    marked = [r for r in records if r.marks_duplicate]
    marked_at: dict[str, int] = {}
    for record in marked:
        marked_at[record.site] = marked_at.get(record.site, 0) + 1
    return Tally(
        published=len(published),
        expected=len(ids),
        delivered=len(ids) - len(lost),
        lost=lost,
        cross_site=cross,
        within_site=within,
        marked_ids={r.message_id for r in marked},
        marked_at=marked_at,
    )


@contextlib.asynccontextmanager
async def running_relay(
    tmp: Path, *, broker_url: str, workers: dict[str, int], metrics: bool = False, **options: Any
) -> AsyncIterator[Relay]:
    """Simulators plus `workers[site]` worker processes per site, consuming; the topology deleted after."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with relay(tmp, broker_url=broker_url, prefix=prefix, **options) as r:
        try:
            async with JobPublisher(config=r.config) as jobs:
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
            # A worker still running when its queues are deleted declares them again: wait for them all.
            for proc in r.workers:
                try:
                    await asyncio.to_thread(proc.wait, WORKER_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await asyncio.to_thread(proc.wait)
            await delete_topology(broker_url, r.config)


def publisher(r: Relay, *, bundled: bool = False) -> JobPublisher:
    return JobPublisher(config=r.config, bundled=bundled)


async def all_consuming(r: Relay, *, timeout_s: float = 20.0) -> None:
    """Wait until every live worker consumes every site's queue again (breakers closed or half-open)."""
    alive = sum(1 for proc in r.workers if proc.poll() is None)
    async with publisher(r) as jobs:
        await wait_for_consumers(jobs, dict.fromkeys(SITES, alive), timeout_s=timeout_s)


def close_broker_connection_of(pid: int) -> bool:
    """Have RabbitMQ close the AMQP connection of the worker with this pid (as a broker restart would).

    Uses `rabbitmqctl`, so it only touches that one connection of the shared local broker.
    """
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
