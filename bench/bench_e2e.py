"""End to end: the relay's delivery to simulated platforms, side by side with Kannel on the same machine.

`single` and `batched` publish jobs straight to the jobs exchange, persistent and confirmed, one job per
message (the workers' costliest case: the ingress bundles the jobs of concurrent submits, while retries,
replays and the spool publish one job per message), and measure the workers alone; `http-single` and
`http-batched` run the whole relay, from HTTP submit to the platforms' receipt, which is what a client sees
and what the Kannel baseline measures.

Scenarios, each bounded in count and time, everything on 127.0.0.1 and stopped at the end:
  single     batch_size 1: a backlog published first, then delivered messages/s from the first receipt
             to the last (one worker process per site), and the workers' CPU per message
  batched    batch_size 100: the same
  http-single   the whole relay: 64 keep-alive clients submit one message per request to `relay ingress`,
             one worker per site delivers; delivered/s from the first submit to the last receipt
  http-batched  the same with batch submits of 100 and batched delivery (batch_size 100)
  kannel     baseline: two real Kannels (bearerbox + smsbox + fakesmsc), sendsms GETs from many
             concurrent keep-alive clients; accepted/s and delivered-to-fakesmsc/s, and the relay's ratio
  failover   the gap from site a's platform going down (refused connections, then a black hole) to site
             a's jobs arriving at site b's platform
  rss        a worker's RSS while it works through a backlog of N queued jobs (prefetch bounds it)

Run: `python -m bench.bench_e2e [--quick]`. Prints one JSON document. Figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import psutil

from bench.bench_submit import migrated_store_key
from bench.raw_http import RawPool, receipt_counter, send_until_received
from ops.harness.deployment import SITES, delete_topology, write_toml
from ops.harness.jobs import JobPublisher, make_job, wait_for_consumers
from ops.harness.kannel import KannelInstance, find_binaries, running_kannel
from ops.harness.processes import RELAY, free_port, spawned, wait_for_port
from ops.harness.simulators import LocalSimulator, running_simulators
from shared.model import Job
from shared.settings import StoreSettings

PUBLISH_IN_FLIGHT = 256
WINDOW_AFTER_FAULT_S = 1.0
SCENARIOS = ("single", "batched", "http-single", "http-batched", "kannel", "failover", "rss")
POLL_S = 0.02


def _config(
    tmp: Path,
    *,
    broker_url: str,
    prefix: str,
    sims: dict[str, LocalSimulator],
    batch_size: int,
    timeout_s: float,
    concurrency: int,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        **(extra or {}),
        "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 5.0},
        "log": {"level": "WARNING", "json": True},
        "worker": {"concurrency": concurrency, "metrics_port": 0, "grace_s": 5.0},
    }
    for site, sim in sims.items():
        sections[f"sites.{site}"] = {"url": sim.url, "timeout_s": timeout_s, "batch_size": batch_size}
    return write_toml(tmp / f"{prefix}.toml", sections)


@contextlib.contextmanager
def _workers(tmp: Path, config: Path, per_site: int, sites: tuple[str, ...] = SITES) -> Iterator[list[Any]]:
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                spawned(
                    [*RELAY, "--config", str(config), "worker", "--site", site, "--metrics-port", "0"],
                    log=tmp / f"worker-{site}-{i}.log",
                )
            )
            for site in sites
            for i in range(per_site)
        ]
        yield procs


def _cpu_s(procs: list[Any]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(proc.pid).cpu_times()
            total += times.user + times.system
    return total


async def _publish_fast(jobs: JobPublisher, items: Iterable[tuple[Job, str]]) -> tuple[int, float]:
    """Publish with PUBLISH_IN_FLIGHT confirms outstanding; returns how many and the seconds it took.

    A fixed set of publishing tasks pulls from the iterator, so a 200,000-job backlog is never all in
    memory at once.
    """
    began = time.perf_counter()
    source = iter(items)
    count = 0

    async def publishing() -> None:
        nonlocal count
        for job, site in source:
            await jobs.publish(job, site=site)
            count += 1
            if len(jobs.published) > 10_000:
                jobs.published.clear()  # only the count matters here
                jobs.site_of.clear()

    await asyncio.gather(*(publishing() for _ in range(PUBLISH_IN_FLIGHT)))
    return count, time.perf_counter() - began


async def throughput(
    tmp: Path,
    sims: dict[str, LocalSimulator],
    *,
    broker_url: str,
    batch_size: int,
    count: int,
    per_site: int,
    concurrency: int,
    deadline_s: float,
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = _config(
        tmp,
        broker_url=broker_url,
        prefix=prefix,
        sims=sims,
        batch_size=batch_size,
        timeout_s=5.0,
        concurrency=concurrency,
    )
    for sim in sims.values():
        sim.reset()
    try:
        async with (
            JobPublisher(config=config) as jobs,
            receipt_counter(sim.admin_port for sim in sims.values()) as received_count,
        ):
            # The backlog is published first: on a shared 2-core machine the publisher in this process is
            # slower than the workers, and a stream would measure the publisher instead.
            items = ((make_job(), SITES[i % len(SITES)]) for i in range(count))
            _, publish_s = await _publish_fast(jobs, items)
            jobs.published.clear()
            with _workers(tmp, config, per_site) as procs:
                began = time.perf_counter()
                first_s: float | None = None
                cpu_at_first_s = 0.0
                received = 0
                while time.perf_counter() - began < deadline_s:
                    received = await received_count()
                    if first_s is None and received:
                        first_s, cpu_at_first_s = time.perf_counter(), _cpu_s(procs)
                    if received >= count:
                        break
                    await asyncio.sleep(POLL_S)
                last_s = time.perf_counter()
                worker_cpu_s = _cpu_s(procs) - cpu_at_first_s
        drain_s = last_s - (first_s or last_s)
        return {
            "batch_size": batch_size,
            "workers_per_site": per_site,
            "concurrency": concurrency,
            "messages": count,
            "delivered": received,
            "drain_seconds": round(drain_s, 2),
            "delivered_per_s": round(received / drain_s, 1) if drain_s else None,
            "published_per_s": round(count / publish_s, 1),
            # CPU the workers spent per delivered message: the fairer figure on a shared machine.
            "worker_cpu_ms_per_message": round(1000 * worker_cpu_s / max(1, received), 3),
            "complete": received >= count,
        }
    finally:
        await delete_topology(broker_url, config)


async def submit_to_receipt(
    tmp: Path,
    sims: dict[str, LocalSimulator],
    *,
    broker_url: str,
    batch_size: int,
    count: int,
    clients: int,
    concurrency: int,
    deadline_s: float,
) -> dict[str, Any]:
    """The whole relay: HTTP submits (one message each, or batches of `batch_size`) to a `relay ingress`
    -> broker -> one `relay worker` per site -> simulated platforms; delivered/s from the first submit to
    the last receipt, with every process on this machine's cores."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    port = free_port()
    store = StoreSettings(url=f"sqlite+aiosqlite:///{tmp / prefix}.db")
    config = _config(
        tmp,
        broker_url=broker_url,
        prefix=prefix,
        sims=sims,
        batch_size=batch_size,
        timeout_s=5.0,
        concurrency=concurrency,
        extra={
            "store": {"url": store.url},
            "ingress": {"port": port, "spool_path": str(tmp / f"{prefix}.spool.db")},
        },
    )
    key = await migrated_store_key(store)
    for sim in sims.values():
        sim.reset()
    try:
        with contextlib.ExitStack() as stack:
            ingress = stack.enter_context(
                spawned([*RELAY, "--config", str(config), "ingress"], log=tmp / f"{prefix}-ingress.log")
            )
            wait_for_port(port, timeout_s=30)
            procs = [ingress, *stack.enter_context(_workers(tmp, config, 1))]
            async with JobPublisher(config=config) as jobs:
                await wait_for_consumers(jobs, {"a": 2, "b": 2}, timeout_s=60)
            async with (
                RawPool(port=port, key=key, size=clients) as pool,
                receipt_counter(sim.admin_port for sim in sims.values()) as received_count,
            ):
                per_request = batch_size if batch_size > 1 else 1
                requests = count // per_request

                async def one(n: int) -> int:
                    items = [
                        {"to": "+31612345678", "from": "Bench", "body": f"e2e {n * per_request + i}"}
                        for i in range(per_request)
                    ]
                    if per_request == 1:
                        status, _ = await pool.post("/v1/messages", orjson.dumps(items[0]))
                        return 1 if status == 202 else 0
                    status, body = await pool.post("/v1/messages/batch", orjson.dumps({"messages": items}))
                    return int(orjson.loads(body)["accepted"]) if status == 202 else 0

                gate = asyncio.Semaphore(clients)

                async def gated(n: int) -> int:
                    async with gate:
                        return await one(n)

                platforms = [sim.process for sim in sims.values()]
                brokers = _broker_processes()
                ingress_before_s, workers_before_s = _cpu_s(procs[:1]), _cpu_s(procs[1:])
                platforms_before_s, broker_before_s = _cpu_s(platforms), _cpu_s(brokers)
                client_before_s = _cpu_s([psutil.Process()])
                flow = await send_until_received(
                    (gated(n) for n in range(requests)), received_count, deadline_s=deadline_s, poll_s=POLL_S
                )
                cpu_s = {
                    "ingress": _cpu_s(procs[:1]) - ingress_before_s,
                    "workers": _cpu_s(procs[1:]) - workers_before_s,
                    "broker": _cpu_s(brokers) - broker_before_s,
                    "platforms": _cpu_s(platforms) - platforms_before_s,
                    "client": _cpu_s([psutil.Process()]) - client_before_s,
                }
        accepted, received, elapsed_s = flow.accepted, flow.received, flow.elapsed_s
        return {
            "what": "HTTP submit -> ingress -> broker -> worker -> simulated platform receipt",
            "batch_size": batch_size,
            "clients": clients,
            "messages": count,
            "accepted": accepted,
            "delivered": received,
            "seconds": round(elapsed_s, 2),
            "delivered_per_s": round(received / elapsed_s, 1) if elapsed_s else None,
            # Where the machine's CPU went, per delivered message: the relay's own processes, the broker,
            # the simulated platforms and this benchmark's client.
            "cpu_ms_per_message": {
                name: round(1000 * seconds / max(1, received), 3) for name, seconds in cpu_s.items()
            },
            "cores_busy": round(sum(cpu_s.values()) / elapsed_s, 2) if elapsed_s else None,
            "complete": accepted is not None and received >= accepted == count,
        }
    finally:
        await delete_topology(broker_url, config)


def _broker_processes() -> list[Any]:
    """The local RabbitMQ's Erlang VM (the benchmark runs against a broker on this machine)."""
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("beam")]


async def kannel_baseline(tmp: Path, *, count: int, clients: int, deadline_s: float) -> dict[str, Any]:
    binaries = find_binaries()
    if binaries is None:
        return {"skipped": "Kannel (kannel, kannel-extras) is not installed"}
    async with contextlib.AsyncExitStack() as stack:
        kannels: list[KannelInstance] = [
            stack.enter_context(running_kannel(tmp / f"kannel-{site}", binaries)) for site in SITES
        ]
        per_kannel = clients // len(kannels)
        pools = [
            await stack.enter_async_context(RawPool(port=k.sendsms_port, key=None, size=per_kannel))
            for k in kannels
        ]
        began = time.perf_counter()

        async def one(i: int) -> bool:
            kannel, pool = kannels[i % len(kannels)], pools[i % len(pools)]
            query = urllib.parse.urlencode(
                {
                    "username": kannel.username,
                    "password": kannel.password,
                    "to": "+31612345678",
                    "from": "Relay",
                    "text": f"bench {i}",
                }
            )
            status, body = await pool.get(f"/cgi-bin/sendsms?{query}")
            return status < 300 and body.startswith((b"0:", b"3:"))

        accepted = sum(await asyncio.gather(*(one(i) for i in range(count))))
        accept_s = time.perf_counter() - began
        delivered = 0
        while time.perf_counter() - began < deadline_s:
            delivered = sum(len(k.received()) for k in kannels)
            if delivered >= accepted:
                break
            await asyncio.sleep(0.1)
        delivered_s = time.perf_counter() - began
    return {
        "messages": count,
        "clients": clients,
        "accepted": accepted,
        "accepted_per_s": round(accepted / accept_s, 1),
        "delivered_to_fakesmsc": delivered,
        "delivered_per_s": round(delivered / delivered_s, 1),
    }


async def failover_gap(
    tmp: Path,
    sims: dict[str, LocalSimulator],
    *,
    broker_url: str,
    mode: str,
    timeout_s: float,
    rate_per_s: float,
    concurrency: int,
) -> dict[str, Any]:
    """Jobs stream to site a only; then a's platform fails.

    `first_via_b_s`: from the fault to site b's platform receiving the first job it had not received before.
    `held_recovered_s`: from the fault until every job published up to WINDOW_AFTER_FAULT_S after it has
    reached some platform: the jobs a's worker took before its breaker opened wait longest (a black hole
    holds them for the site's timeout_s).
    """
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = _config(
        tmp,
        broker_url=broker_url,
        prefix=prefix,
        sims=sims,
        batch_size=1,
        timeout_s=timeout_s,
        concurrency=concurrency,
    )
    for sim in sims.values():
        sim.reset()
    try:
        async with JobPublisher(config=config) as jobs:
            with _workers(tmp, config, 1):
                await wait_for_consumers(jobs, {"a": 2, "b": 2}, timeout_s=60)
                stream = asyncio.create_task(
                    jobs.stream(int(rate_per_s * 30), rate_per_s=rate_per_s, sites=("a",))
                )
                await asyncio.sleep(2.0)
                b_before = set(sims["b"].references())
                began = time.perf_counter()
                sims["a"].set_fault(mode)
                window_ids: set[str] | None = None
                first_via_b_s: float | None = None
                held_recovered_s: float | None = None
                # Polled from a thread so the stream this process publishes keeps its pace.
                while time.perf_counter() - began < timeout_s + 15:
                    b_now = set(await asyncio.to_thread(sims["b"].references))
                    now_s = time.perf_counter() - began
                    if first_via_b_s is None and b_now - b_before:
                        first_via_b_s = now_s
                    if window_ids is None and now_s >= WINDOW_AFTER_FAULT_S:
                        window_ids = {job.id for job in jobs.published}
                    if window_ids is not None and window_ids <= b_now | set(
                        await asyncio.to_thread(sims["a"].references)
                    ):
                        held_recovered_s = now_s
                        if first_via_b_s is not None:
                            break
                    await asyncio.sleep(POLL_S)
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream
                sims["a"].set_fault("none")
        return {
            "mode": mode,
            "site_timeout_s": timeout_s,
            "stream_per_s": rate_per_s,
            "first_via_b_s": _round(first_via_b_s),
            "held_recovered_s": _round(held_recovered_s),
            "b_received_before_fault": len(b_before),
        }
    finally:
        await delete_topology(broker_url, config)


async def rss_with_backlog(
    tmp: Path,
    sims: dict[str, LocalSimulator],
    *,
    broker_url: str,
    backlog: int,
    watch_s: float,
    concurrency: int,
) -> dict[str, Any]:
    """Queue `backlog` jobs for site a, nobody consuming; start one worker, sample its RSS as it drains."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = _config(
        tmp,
        broker_url=broker_url,
        prefix=prefix,
        sims=sims,
        batch_size=1,
        timeout_s=5.0,
        concurrency=concurrency,
    )
    for sim in sims.values():
        sim.reset()
    try:
        async with JobPublisher(config=config) as jobs:
            _, publish_s = await _publish_fast(jobs, ((make_job(), "a") for _ in range(backlog)))
            jobs.published.clear()
            with _workers(tmp, config, 1, sites=("a",)) as procs:
                proc = psutil.Process(procs[0].pid)
                await wait_for_consumers(jobs, {"a": 1}, timeout_s=60)
                samples: list[float] = []
                began = time.perf_counter()
                while time.perf_counter() - began < watch_s + 60 and len(samples) < watch_s / 0.25:
                    with contextlib.suppress(psutil.Error):
                        samples.append(proc.memory_info().rss / 2**20)
                    await asyncio.sleep(0.25)
                delivered = sims["a"].stats()["unique"]
                remaining = await jobs.queue_depth(f"{prefix}.site.a")
        started = samples[: max(1, len(samples) // 5)]
        return {
            "backlog": backlog,
            "published_per_s": round(backlog / publish_s, 1),
            "watched_s": watch_s,
            "delivered_while_watched": delivered,
            "still_queued": remaining,
            "rss_mb_first_fifth_max": round(max(started), 1) if samples else None,
            "rss_mb_max": round(max(samples), 1) if samples else None,
            "rss_mb_last": round(samples[-1], 1) if samples else None,
        }
    finally:
        await delete_topology(broker_url, config)


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    broker_url = args.broker_url
    with TemporaryDirectory(prefix="bench-e2e-") as raw, running_simulators(SITES, log_dir=Path(raw)) as sims:
        tmp = Path(raw)
        report: dict[str, Any] = {
            "what": "publish to the broker -> relay worker -> simulated platform receipt (no HTTP submit)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "caveat": "measured on a machine whose cores are shared with other work: figures are noisy",
        }
        if "single" in args.only:
            report["single"] = await throughput(
                tmp,
                sims,
                broker_url=broker_url,
                batch_size=1,
                count=args.count,
                per_site=args.workers_per_site,
                concurrency=args.concurrency,
                deadline_s=args.deadline_s,
            )
        if "batched" in args.only:
            report["batched"] = await throughput(
                tmp,
                sims,
                broker_url=broker_url,
                batch_size=100,
                count=args.count_batched,
                per_site=args.workers_per_site,
                concurrency=args.concurrency,
                deadline_s=args.deadline_s,
            )
        for scenario, batch_size, count in (
            ("http-single", 1, args.count),
            ("http-batched", 100, args.count_batched),
        ):
            if scenario in args.only:
                report[scenario] = await submit_to_receipt(
                    tmp,
                    sims,
                    broker_url=broker_url,
                    batch_size=batch_size,
                    count=count,
                    clients=64 if batch_size == 1 else 8,
                    concurrency=args.concurrency,
                    deadline_s=args.deadline_s,
                )
        if "kannel" in args.only:
            report["kannel"] = await kannel_baseline(
                tmp, count=args.kannel_count, clients=args.kannel_clients, deadline_s=args.deadline_s
            )
        kannel_rate = report.get("kannel", {}).get("delivered_per_s")
        if kannel_rate:
            report["ratio_to_kannel"] = {
                name: round(report[name]["delivered_per_s"] / kannel_rate, 2)
                for name in ("single", "batched", "http-single", "http-batched")
                if report.get(name, {}).get("delivered_per_s")
            }
        if "failover" in args.only:
            report["failover"] = [
                await failover_gap(
                    tmp,
                    sims,
                    broker_url=broker_url,
                    mode=mode,
                    timeout_s=args.failover_timeout_s,
                    rate_per_s=args.failover_rate,
                    concurrency=args.concurrency,
                )
                for mode in ("down", "blackhole")
            ]
        if "rss" in args.only:
            report["rss"] = await rss_with_backlog(
                tmp,
                sims,
                broker_url=broker_url,
                backlog=args.backlog,
                watch_s=args.rss_watch_s,
                concurrency=args.concurrency,
            )
        report["targets"] = {
            "single_delivered_per_s": 2000,
            "batched_delivered_per_s": 5000,
            "failover_held_recovered_down_s": 2.0,
            "failover_held_recovered_blackhole_s": args.failover_timeout_s + 1.0,
        }
        return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--quick", action="store_true", help="small counts: checks the bench works")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--count-batched", type=int, default=40_000)
    parser.add_argument("--kannel-count", type=int, default=20_000)
    parser.add_argument("--kannel-clients", type=int, default=64)
    parser.add_argument("--workers-per-site", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--failover-timeout-s", type=float, default=2.0)
    parser.add_argument("--failover-rate", type=float, default=300.0)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--rss-watch-s", type=float, default=15.0)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run just these scenarios"
    )
    args = parser.parse_args()
    if args.quick:
        args.count, args.count_batched, args.kannel_count = 2_000, 4_000, 1_000
        args.backlog, args.rss_watch_s = 10_000, 5.0
    try:
        report = asyncio.run(run(args))
    except Exception as exc:
        print(json.dumps({"error": repr(exc)}), file=sys.stderr)
        raise
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
