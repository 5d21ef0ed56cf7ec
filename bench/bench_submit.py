"""Submit throughput and latency of the ingress, against the raw confirmed-publish ceiling of the broker.

One run measures, each bounded in count and time:
  1. ceiling: aio-pika publishes (persistent, publisher confirms, 256 in flight) into a scratch quorum queue,
     from a process of its own, on Python's own event loop (the ceiling the targets use) and again on
     uvloop (the relay's loop);
  2. single: accepted messages/s of POST /v1/messages with 64 concurrent keep-alive clients;
  3. batch: accepted messages/s of POST /v1/messages/batch with 100 messages each;
  4. paced: p50/p99 latency of single submits offered at a steady 500 messages/s.
Phases 1-3 run in rounds (3 by default), and each ratio is the median over the rounds of that round's
ratio, so a ceiling and a relay figure measured seconds apart are compared.
The ingress runs as a `relay ingress` child process (its own interpreter, so client and server do not share
a GIL) with a scratch topology prefix, store and spool, all removed afterwards. Prints one JSON report with
the ratios to the ceiling. Run: `python -m bench.bench_submit [--json] [--quick]`. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import psutil
import uvloop

from bench.raw_http import RawPool
from ops.harness.cleanup import delete_broker_names
from ops.harness.processes import free_port, spawned
from shared.settings import Settings, StoreSettings
from shared.store.api_keys import create_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
START_TIMEOUT_S = 30.0
PHASE_TIMEOUT_S = 90.0
CLIENTS = 64
TARGETS = {"single_ratio": 0.5, "batch_ratio": 0.8, "paced_p99_ms": 20.0}
# The ingress routes to sites a and b; no platform is behind them: the ingress alone is measured.
SITE_URLS = {"a": "http://127.0.0.1:9001/v1.0/message", "b": "http://127.0.0.1:9002/v1.0/message"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(count: int, elapsed_s: float, latencies_s: list[float]) -> dict[str, Any]:
    return {
        "messages": count,
        "elapsed_s": round(elapsed_s, 3),
        "per_s": round(count / elapsed_s, 1) if elapsed_s else 0.0,
        "p50_ms": round(percentile(latencies_s, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 2),
    }


async def ceiling(count: int, in_flight: int) -> dict[str, Any]:
    """The broker's confirmed-publish rate for this client library: what the relay can at best reach."""
    connection = await aio_pika.connect(BROKER_URL)
    name = f"bench.ceiling.{uuid.uuid4().hex[:8]}"
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = orjson.dumps({"v": 1, "job": {"id": "x" * 32, "to": "+31612345678", "body": "b" * 60}})
        latencies: list[float] = []
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name,
                    timeout=10,
                )
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
    return summary(count, elapsed, latencies)


def ingress_env(workdir: Path, *, prefix: str, port: int, processes: int) -> dict[str, str]:
    """The environment of a scratch ingress: its own store, spool and topology prefix."""
    return {
        **os.environ,
        "RELAY_BROKER__URL": BROKER_URL,
        "RELAY_BROKER__PREFIX": prefix,
        "RELAY_STORE__URL": f"sqlite+aiosqlite:///{workdir / 'relay.db'}",
        "RELAY_INGRESS__SPOOL_PATH": str(workdir / "spool.db"),
        "RELAY_INGRESS__PORT": str(port),
        "RELAY_INGRESS__PROCESSES": str(processes),
        "RELAY_LOG__LEVEL": "INFO",
        **{f"RELAY_SITES__{site.upper()}__URL": url for site, url in SITE_URLS.items()},
    }


@contextlib.contextmanager
def ingress_process(
    workdir: Path, *, prefix: str, port: int, processes: int
) -> Iterator[subprocess.Popen[bytes]]:
    env = ingress_env(workdir, prefix=prefix, port=port, processes=processes)
    with spawned(
        [sys.executable, "-m", "ops.cli", "ingress"], env=env, log=workdir / "ingress.log", stop_timeout_s=15
    ) as proc:
        yield proc


async def wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the ingress was not ready after {START_TIMEOUT_S} s")


def message(n: int) -> dict[str, Any]:
    return {"to": "+31612345678", "from": "Bench", "body": f"benchmark message {n}"}


async def closed_loop(
    count: int, concurrency: int, send: Callable[[int], Awaitable[int]]
) -> tuple[float, list[float], int]:
    """`concurrency` clients send back to back until `count` requests are done."""
    latencies: list[float] = []
    accepted = 0
    next_index = iter(range(count))

    async def client() -> None:
        nonlocal accepted
        for n in next_index:
            started = time.perf_counter()
            got = await send(n)  # awaited first: `x += await f()` reads x before the await
            accepted += got
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, accepted


async def paced(
    count: int, rate_per_s: float, send: Callable[[int], Awaitable[int]]
) -> tuple[float, list[float], int]:
    """Open loop: request n leaves at start + n / rate, whether or not earlier ones were answered."""
    latencies: list[float] = []
    accepted = 0
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05

    async def one(n: int) -> None:
        nonlocal accepted
        delay = begin + n / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        got = await send(n)  # awaited first: `x += await f()` reads x before the await
        accepted += got
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.timeout(PHASE_TIMEOUT_S):
        await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - started, latencies, accepted


async def relay_phases(
    key: str, port: int, scale: int, server: psutil.Process, rounds: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        await wait_ready(probe)
    async with RawPool(port=port, key=key, size=CLIENTS) as client:
        answers: Counter[str] = Counter()

        async def single(n: int) -> int:
            status, body = await client.post("/v1/messages", orjson.dumps(message(n)))
            answers[str(status)] += 1
            if status != 202 and answers[str(status)] == 1:
                print(f"answer {status}: {body[:300]!r}", file=sys.stderr)
            return 1 if status == 202 else 0

        async def batch(n: int) -> int:
            payload = orjson.dumps({"messages": [message(n * 100 + i) for i in range(100)]})
            status, body = await client.post("/v1/messages/batch", payload)
            answers[str(status)] += 1
            return int(orjson.loads(body)["accepted"]) if status == 202 else 0

        def server_cpu_s() -> float:
            # With several ingress processes the parent only supervises: count its children too.
            total = 0.0
            for process in [server, *server.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
            return total

        async def measure(run: Awaitable[tuple[float, list[float], int]], **extra: Any) -> dict[str, Any]:
            cpu_before = server_cpu_s()
            elapsed, latencies, accepted = await run
            cpu_ms = (server_cpu_s() - cpu_before) * 1000
            per_message = round(cpu_ms / accepted, 3) if accepted else None
            return {
                **summary(accepted, elapsed, latencies),
                "server_cpu_ms_per_message": per_message,
                **extra,
            }

        await closed_loop(200, CLIENTS, single)  # warm-up: connections, key cache, page cache
        results: dict[str, Any] = {"rounds": []}
        count, batches = 20_000 // scale, 300 // scale
        for _ in range(rounds):
            # Each round measures the ceilings right before the relay, so a ratio compares neighbours in
            # time on this noisy machine; the report takes the median round.
            this_round = {
                "ceiling": await asyncio.to_thread(ceiling_in_child, "asyncio", ceiling_count(scale)),
                "ceiling_uvloop": await asyncio.to_thread(ceiling_in_child, "uvloop", ceiling_count(scale)),
                "single": await measure(
                    closed_loop(count, CLIENTS, single), requests=count, concurrency=CLIENTS
                ),
                "batch": await measure(
                    closed_loop(batches, 8, batch),
                    requests=batches,
                    batch_size=100,
                    concurrency=8,
                    latency_is="per batch request",
                ),
            }
            results["rounds"].append(this_round)
        rate = 500.0
        results["paced"] = await measure(paced(int(rate * 10 / scale), rate, single), offered_per_s=rate)
        results["answers"] = dict(answers)
        return results


async def migrated_store_key(store: StoreSettings) -> str:
    """Migrate a scratch store and return a new API key of tenant "bench" in it."""
    await asyncio.to_thread(upgrade, store)
    engine = make_engine(store)
    try:
        key, _ = await create_key(make_sessionmaker(engine), tenant="bench")
    finally:
        await engine.dispose()
    return key


def ceiling_count(scale: int) -> int:
    return 20_000 // scale


def ceiling_in_child(loop: str, count: int) -> dict[str, Any]:
    """The ceiling measured by a process of its own on `loop` ("asyncio", Python's own, as the targets
    define it, or "uvloop", the relay's loop, where aio-pika publishes about a quarter faster)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_submit", "--ceiling", loop, "--count", str(count)],
        capture_output=True,
        timeout=PHASE_TIMEOUT_S + START_TIMEOUT_S,
        check=True,
    )
    result: dict[str, Any] = {**orjson.loads(done.stdout), "event_loop": loop}
    return result


def median_ratio(rounds: list[dict[str, Any]], phase: str, top: str) -> float:
    return round(statistics.median(float(r[phase]["per_s"]) / float(r[top]["per_s"]) for r in rounds), 3)


async def main_async(quick: bool, processes: int, rounds: int) -> dict[str, Any]:
    scale = 4 if quick else 1
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "quick": quick, "rounds_run": rounds}
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    settings = Settings(
        broker={"url": BROKER_URL, "prefix": prefix},
        sites={site: {"url": url} for site, url in SITE_URLS.items()},
    )
    try:
        store = StoreSettings(url=f"sqlite+aiosqlite:///{workdir / 'relay.db'}")
        key = await migrated_store_key(store)
        port = free_port()
        with ingress_process(workdir, prefix=prefix, port=port, processes=processes) as proc:
            report.update(await relay_phases(key, port, scale, psutil.Process(proc.pid), rounds))
        report["ingress_processes"] = processes
    finally:
        await delete_broker_names(BROKER_URL, settings)
        shutil.rmtree(workdir, ignore_errors=True)

    done = report["rounds"]
    # The round with the median single-submit rate stands for the run in the summary figures.
    middle = sorted(done, key=lambda r: r["single"]["per_s"])[len(done) // 2]
    report.update({name: middle[name] for name in ("ceiling", "ceiling_uvloop", "single", "batch")})
    report["ratios"] = {
        f"{phase}_to_{top}": median_ratio(done, phase, top)
        for phase in ("single", "batch")
        for top in ("ceiling", "ceiling_uvloop")
    }
    report["ratios_are"] = "the median over the rounds of each round's ratio"
    report["targets"] = {
        "single >= 0.5 x ceiling": report["ratios"]["single_to_ceiling"] >= TARGETS["single_ratio"],
        "batch >= 0.8 x ceiling": report["ratios"]["batch_to_ceiling"] >= TARGETS["batch_ratio"],
        "p99 < 20 ms at 500/s": report["paced"]["p99_ms"] < TARGETS["paced_p99_ms"],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--quick", action="store_true", help="a quarter of the counts")
    parser.add_argument("--processes", type=int, default=1, help="ingress processes (ingress.processes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ceiling, single and batch")
    parser.add_argument("--ceiling", choices=("asyncio", "uvloop"), help="only measure the ceiling")
    parser.add_argument("--count", type=int, default=ceiling_count(1), help="with --ceiling: publishes")
    args = parser.parse_args()
    if args.ceiling:
        run = asyncio.run if args.ceiling == "asyncio" else uvloop.run
        print(orjson.dumps(run(ceiling(args.count, 256))).decode())
        return
    # The relay's clients run on uvloop, the relay's own loop, so they take less of the shared CPU.
    report = uvloop.run(main_async(args.quick, args.processes, 1 if args.quick else args.rounds))
    if not args.json:
        print("submit benchmark (numbers are noisy when other work shares the CPU):", file=sys.stderr)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
