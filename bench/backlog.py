"""Cost of a backlog: publish N jobs into a site queue with nobody consuming, then start one worker and a
simulated platform and watch it drain. Per size: publish rate, time to drain, delivery rate, and the
worker's RSS while draining (it must stay flat: prefetch bounds what a worker holds, not the backlog).

Also the ceiling the submit benchmark is compared with: raw aio-pika persistent, confirmed publishes to a
quorum queue, `in_flight` at once. Run alone: `python -m bench.backlog --sizes 10000 100000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import DeliveryMode

from bench.outage import BENCH_WORKER, BROKER_URL, RssSampler
from ops.harness.deployment import SITES, delete_topology, local_config, settings_of
from ops.harness.processes import RELAY, spawned
from ops.harness.simulators import running_simulators
from shared.envelope import encode_job, encode_jobs
from shared.model import Job, new_message_id
from shared.settings import Settings
from shared.topology import declare, jobs_exchange, site_queue, topology_from

IN_FLIGHT = 256
SITE = "a"


def backlog_job(index: int) -> Job:
    now = time.time()
    return Job(
        id=new_message_id(),
        tenant="bench",
        to=f"+316{10_000_000 + index % 10_000_000}",
        sender="BENCH",
        body=f"backlog message {index}",
        accepted_at=now,
        expires_at=now + 3600,
    )


async def _publish_confirmed(
    exchange: aio_pika.abc.AbstractExchange,
    bodies: Any,
    *,
    routing_key: str,
    in_flight: int,
    headers: Any = None,
) -> int:
    slots = asyncio.Semaphore(in_flight)
    count = 0

    async def one(message: aio_pika.Message) -> None:
        try:
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
        finally:
            slots.release()

    tasks = []
    for message_id, body in bodies:
        await slots.acquire()
        message = aio_pika.Message(
            body, delivery_mode=DeliveryMode.PERSISTENT, message_id=message_id, headers=headers
        )
        tasks.append(asyncio.create_task(one(message)))
        count += 1
        if len(tasks) >= 10 * in_flight:
            await asyncio.gather(*tasks)
            tasks = []
    await asyncio.gather(*tasks)
    return count


async def publish_ceiling(broker_url: str, *, count: int, in_flight: int = IN_FLIGHT) -> dict[str, float]:
    """Raw aio-pika confirmed publishes of job-sized persistent messages to a fresh quorum queue."""
    queue_name = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        try:
            body = encode_job(backlog_job(0))
            started = time.perf_counter()
            await _publish_confirmed(
                channel.default_exchange,
                ((str(i), body) for i in range(count)),
                routing_key=queue_name,
                in_flight=in_flight,
            )
            elapsed_s = time.perf_counter() - started
        finally:
            await channel.queue_delete(queue_name)
    return {
        "count": count,
        "in_flight": in_flight,
        "seconds": round(elapsed_s, 3),
        "per_s": round(count / elapsed_s),
    }


def _bundles(count: int, bundle_max: int) -> Iterator[tuple[str, bytes]]:
    for start in range(0, count, bundle_max):
        jobs = [backlog_job(i) for i in range(start, min(count, start + bundle_max))]
        yield jobs[0].id, encode_jobs(jobs)


async def fill_backlog(settings: Settings, *, count: int) -> float:
    """Publish `count` jobs to the site's queue as the ingress does under load (full bundles of
    `ingress.bundle_max`, no delivery-state headers); seconds taken."""
    connection = await aio_pika.connect(settings.broker.urls[0])
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(channel, topology_from(settings))
        exchange = await channel.get_exchange(jobs_exchange(settings.broker.prefix))
        started = time.perf_counter()
        await _publish_confirmed(
            exchange,
            _bundles(count, settings.ingress.bundle_max),
            routing_key=SITE,
            in_flight=IN_FLIGHT,
        )
        return time.perf_counter() - started


async def queue_depth(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.broker.urls[0])
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(site_queue(settings.broker.prefix, SITE), passive=True)
        return queue.declaration_result.message_count or 0  # messages: a bundle counts once


def run_backlog(
    size: int, *, directory: Path, broker_url: str = BROKER_URL, timeout_s: float = 600.0
) -> dict[str, Any]:
    """One backlog size, start to end, in a topology of its own that is deleted afterwards."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with running_simulators(SITES, log_dir=directory) as sims:
        config = local_config(
            directory,
            broker_url=broker_url,
            prefix=prefix,
            sites={site: {"url": sim.url, "timeout_s": 1.0} for site, sim in sims.items()},
            worker=BENCH_WORKER,
            broker={"confirm_timeout_s": 1.0},
        )
        settings = settings_of(config)
        try:
            publish_s = asyncio.run(fill_backlog(settings, count=size))
            print(f"backlog {size}: published in {publish_s:.1f} s", file=sys.stderr)
            started = time.perf_counter()
            worker_args = [*RELAY, "--config", str(config), "worker", "--site", SITE, "--metrics-port", "0"]
            with (
                spawned(worker_args, log=directory / "worker.log", stop_timeout_s=30) as worker,
                RssSampler(pids={"worker": worker.pid}) as rss,
            ):
                delivered = 0
                first_receipt_at = None
                deadline = time.monotonic() + timeout_s
                while delivered < size and time.monotonic() < deadline:
                    time.sleep(0.25)
                    delivered = sims[SITE].stats()["unique"]
                    if delivered and first_receipt_at is None:
                        first_receipt_at = time.perf_counter()
                finished_at = time.perf_counter()
            remaining = asyncio.run(queue_depth(settings))
        finally:
            asyncio.run(delete_topology(broker_url, config))
    samples = rss.samples.get("worker", [])
    # The worker's own start (interpreter, connection, declarations) is not part of the drain.
    startup_s = (first_receipt_at or finished_at) - started
    drain_s = finished_at - (first_receipt_at or started)
    return {
        "size": size,
        "publish_s": round(publish_s, 2),
        "publish_per_s": round(size / publish_s),
        "delivered": delivered,
        "left_in_queue": remaining,
        "drained": delivered >= size,
        "worker_start_s": round(startup_s, 2),
        "drain_s": round(drain_s, 2),
        "delivery_per_s": round(delivered / drain_s) if drain_s > 0 else None,
        "worker_rss": rss.summary_mb().get("worker", {}),
        "worker_rss_samples": [[round(t, 2), r] for t, r in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000])
    parser.add_argument("--ceiling-count", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps({"ceiling": asyncio.run(publish_ceiling(BROKER_URL, count=args.ceiling_count))}))
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="relay-backlog-") as tmp:
            result = run_backlog(size, directory=Path(tmp))
        result.pop("worker_rss_samples")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
