"""Throughput of the simulated platform (`relay platform-sim`): messages/s with one message per request and
with batches of 100, measured with a lean raw-socket client and with the relay's own http-json adapter.

Starts the simulator as a child process on free 127.0.0.1 ports, sends a bounded number of messages per
scenario, checks the simulator counted every one, prints one JSON document and stops everything it started.
Besides wall-clock rates it reports the simulator's own CPU time per message, which is the fairer figure on
a machine whose cores are shared. Run: `python -m bench.bench_platform_sim [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson
import psutil

from ops.harness.simulators import LocalSimulator, running_simulator
from shared.model import Job
from workers.platforms.http_json import HttpJsonPlatform, encode_submit

# The simulator's own entry point: the same code `relay platform-sim` runs, without the other commands.
SIM_COMMAND = (sys.executable, "-m", "simulator")
SCENARIO_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Scenario:
    name: str
    client: str  # "raw" or "adapter"
    batch_size: int
    messages: int
    connections: int


def scenarios(quick: bool) -> list[Scenario]:
    scale = 4 if quick else 1
    return [
        Scenario("raw-single", "raw", 1, 8_000 // scale, 32),
        Scenario("raw-batch-100", "raw", 100, 60_000 // scale, 16),
        Scenario("adapter-single", "adapter", 1, 4_000 // scale, 32),
        Scenario("adapter-batch-100", "adapter", 100, 40_000 // scale, 16),
    ]


def make_jobs(scenario: Scenario) -> list[Job]:
    expires_at = time.time() + 3600
    return [
        Job(
            id=f"{scenario.name}-{n:07d}",
            tenant="bench",
            to="+31612345678",
            sender="Bench",
            body="benchmark message",
            expires_at=expires_at,
        )
        for n in range(scenario.messages)
    ]


def raw_requests(jobs: list[Job], batch_size: int) -> list[bytes]:
    requests = []
    for start in range(0, len(jobs), batch_size):
        body = encode_submit(jobs[start : start + batch_size], token="bench")
        head = (
            "POST /v1.0/message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def run_raw(port: int, requests: list[bytes], connections: int, latencies_s: list[float]) -> None:
    """Keep-alive connections, one request in flight on each: the least client work per request."""
    queue = iter(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected answer {head[:40]!r}")
                latencies_s.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))


async def run_adapter(url: str, jobs: list[Job], scenario: Scenario, latencies_s: list[float]) -> None:
    """The relay's own adapter, as a worker uses it: `connections` sends at once."""
    platform = HttpJsonPlatform(
        url=url,
        token="bench",
        timeout_s=10.0,
        batch_size=scenario.batch_size,
        concurrency=scenario.connections,
    )
    batches = iter([jobs[i : i + scenario.batch_size] for i in range(0, len(jobs), scenario.batch_size)])

    async def sender() -> None:
        for batch in batches:
            started = time.perf_counter()
            results = await platform.send(batch)
            if any(r.outcome != "accepted" for r in results):
                raise RuntimeError(f"not accepted: {results[0]}")
            latencies_s.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(sender() for _ in range(scenario.connections)))
    finally:
        await platform.aclose()


def percentile_ms(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2) if ordered else 0.0


async def drive(scenario: Scenario, *, port: int, latencies_s: list[float]) -> None:
    jobs = make_jobs(scenario)
    run: Awaitable[None]
    if scenario.client == "raw":
        run = run_raw(port, raw_requests(jobs, scenario.batch_size), scenario.connections, latencies_s)
    else:
        run = run_adapter(f"http://127.0.0.1:{port}/v1.0/message", jobs, scenario, latencies_s)
    await asyncio.wait_for(run, timeout=SCENARIO_TIMEOUT_S)


def measure(scenario: Scenario, *, sim: LocalSimulator, process: psutil.Process) -> dict[str, Any]:
    sim.reset()
    latencies_s: list[float] = []
    sim_cpu_before_s = sum(process.cpu_times()[:2])
    client_cpu_before_s = time.process_time()
    started = time.perf_counter()
    asyncio.run(drive(scenario, port=sim.port, latencies_s=latencies_s))
    elapsed_s = time.perf_counter() - started
    client_cpu_s = time.process_time() - client_cpu_before_s
    sim_cpu_s = sum(process.cpu_times()[:2]) - sim_cpu_before_s
    stats = sim.stats()
    if stats["unique"] != scenario.messages:
        raise RuntimeError(f"{scenario.name}: simulator counted {stats}, expected {scenario.messages}")
    return {
        "scenario": scenario.name,
        "client": scenario.client,
        "batch_size": scenario.batch_size,
        "connections": scenario.connections,
        "messages": scenario.messages,
        "requests": len(latencies_s),
        "elapsed_s": round(elapsed_s, 3),
        "messages_per_s": round(scenario.messages / elapsed_s),
        "requests_per_s": round(len(latencies_s) / elapsed_s),
        "request_latency_p50_ms": percentile_ms(latencies_s, 0.50),
        "request_latency_p99_ms": percentile_ms(latencies_s, 0.99),
        "sim_cpu_s": round(sim_cpu_s, 3),
        "messages_per_sim_cpu_s": round(scenario.messages / sim_cpu_s) if sim_cpu_s > 0 else None,
        "client_cpu_ms_per_message": round(client_cpu_s * 1000 / scenario.messages, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a quarter of the messages")
    args = parser.parse_args()
    quiet = {**os.environ, "RELAY_LOG__LEVEL": "WARNING"}
    with running_simulator(command=SIM_COMMAND, env=quiet) as sim:
        assert sim.process is not None
        process = psutil.Process(sim.process.pid)
        results = [measure(scenario, sim=sim, process=process) for scenario in scenarios(args.quick)]
    report = {
        "bench": "platform-sim",
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "note": "client and simulator share the machine; wall-clock rates are bounded by the client too",
        "results": results,
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
