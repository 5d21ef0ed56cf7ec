"""What delivery reports and customer callbacks cost the relay, and how soon a report reaches the customer.

Two `relay up` deployments of one shape on free ports, both up for the whole run: `off` (its simulated
sites have no report secret, so no reports; no message names a callback_url) and `on` (every simulated
platform sends a `delivered` report for every message it takes, and every message names a callback_url
at a customer endpoint on this machine, `bench.callback_sink`, that checks each signature). Rounds
alternate the two (off-on, then on-off, ...): each submits `--count` messages over `--clients` keep-alive
connections, one message per HTTP request, and measures from the first submit to the last receipt at the
simulated platforms. Printed: the rate of each, the median of the rounds' on/off ratios (target >= 0.7),
and the time from the simulator sending a message's report to the customer endpoint receiving its
`delivered` callback, p50 and p99 over the `on` rounds; those rounds saturate the relay, so that time is
mostly queueing, and a paced run follows (`--paced-rate` messages/s for `--paced-s`, on `on`) whose
report->callback p50/p99 is the latency a customer sees at a load the relay keeps up with. Everything on
127.0.0.1, bounded in count and time, stopped at the end.

Run: `python -m bench.bench_reports [--quick] [--count N] [--rounds N] [--paced-rate R] [--paced-s S]`;
JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psutil

from bench.raw_http import RawPool, receipt_counter, send_until_received
from ops.harness.deployment import Deployment, http_json_sites_on_free_ports, relay_up
from ops.harness.processes import RELAY, free_port, spawned, wait_for_port

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Workers as a deployment runs them (concurrency 64), heartbeats as the other benchmarks have them.
WORKER = {"concurrency": 64, "heartbeat_interval_s": 1.0}
# One customer endpoint takes every callback of the run: its lane must hold a round's burst, or the
# callbacks a full lane puts back wait a retry tier (10 s) and the latency measures that instead.
CALLBACKS = {"per_host_concurrency": 16, "per_host_waiting": 1024}
POLL_S = 0.05
CALLBACK_WAIT_S = 60.0
RATIO_TARGET = 0.7


async def submit_round(
    up: Deployment,
    *,
    count: int,
    clients: int,
    deadline_s: float,
    callback_url: str | None,
    rate: float | None = None,
) -> dict[str, Any]:
    """`count` single submits to the deployment, as fast as they go or `rate` a second; delivered/s from
    the first submit to the last receipt."""
    for sim in up.simulators.values():
        sim.reset()
    port = urlsplit(up.api_url).port or 0
    ids: list[str] = []
    extra = {"callback_url": callback_url} if callback_url else {}
    async with (
        RawPool(port=port, key=up.key, size=clients) as pool,
        receipt_counter(
            urlsplit(sim.admin_url).port or 0 for sim in up.simulators.values()
        ) as received_count,
    ):
        gate = asyncio.Semaphore(clients)

        async def one(n: int) -> int:
            if rate:
                await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            body = {"to": "+31612345678", "from": "Bench", "body": f"reports {n}", **extra}
            async with gate:
                status, answer = await pool.post("/v1/messages", orjson.dumps(body))
            if status != 202:
                return 0
            ids.append(str(orjson.loads(answer)["id"]))
            return 1

        began = time.perf_counter()
        flow = await send_until_received(
            (one(n) for n in range(count)), received_count, deadline_s=deadline_s, poll_s=POLL_S
        )
    return {
        "accepted": flow.accepted,
        "delivered": flow.received,
        "seconds": round(flow.elapsed_s, 3),
        "per_s": round(flow.received / flow.elapsed_s, 1) if flow.elapsed_s else None,
        "complete": flow.accepted == count and flow.received >= count,
        "ids": ids,
    }


async def callback_latencies(up: Deployment, sink_url: str, ids: list[str]) -> dict[str, Any]:
    """Wait (bounded) for every message's `delivered` callback; each one's time from its report's send."""
    wanted = set(ids)
    deadline = time.monotonic() + CALLBACK_WAIT_S
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            received = (await client.get(f"{sink_url}/received")).json()["callbacks"]
            delivered = {m: at for m, status, at, _ in received if status == "delivered" and m in wanted}
            if len(delivered) >= len(wanted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        sent_at: dict[str, float] = {}
        for sim in up.simulators.values():
            log = (await client.get(f"{sim.admin_url}/reports/log")).json()["reports"]
            for reference, at in log:
                sent_at.setdefault(reference, at)
        await client.post(f"{sink_url}/reset")
    return {
        "latencies_ms": [1000 * (at - sent_at[m]) for m, at in delivered.items() if m in sent_at],
        "missing": len(wanted) - len(delivered),
        "unverified": sum(1 for *_, ok in received if not ok),
        "callbacks": len(received),
    }


ROLES = ("ingress", "worker", "callbacks", "platform-sim")


def cpu_by_role(up: Deployment) -> dict[str, float]:
    """CPU seconds each kind of the deployment's processes has used so far (a child's own children too)."""
    used = dict.fromkeys(ROLES, 0.0)
    for name, pid in up.child_pids.items():
        role = next((r for r in ROLES if name.startswith(r)), None)
        if role is None:
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            for each in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = each.cpu_times()
                    used[role] += times.user + times.system
    return used


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def tenant_secret(up: Deployment) -> str:
    done = subprocess.run(
        [*RELAY, "--config", str(up.config), "keys", "secret", "--tenant", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def deployments(directory: Path) -> Iterator[tuple[Deployment, Deployment, str]]:
    """The `off` and `on` deployments, and the URL of the customer endpoint `on`'s callbacks go to."""
    with contextlib.ExitStack() as stack:
        ups = []
        for mode in ("off", "on"):
            folder = directory / mode
            folder.mkdir()
            ups.append(
                stack.enter_context(
                    relay_up(
                        folder,
                        broker_url=BROKER_URL,
                        prefix=f"benchrep{mode}{uuid.uuid4().hex[:6]}",
                        worker=WORKER,
                        sites=http_json_sites_on_free_ports(timeout_s=5.0),
                        reports=mode == "on",
                        callbacks=CALLBACKS,
                    )
                )
            )
        off, on = ups
        port = free_port()
        sink = [
            sys.executable,
            "-m",
            "bench.callback_sink",
            "--port",
            str(port),
            "--secret",
            tenant_secret(on),
        ]
        stack.enter_context(spawned(sink, log=directory / "sink.log"))
        wait_for_port(port, timeout_s=30)
        yield off, on, f"http://127.0.0.1:{port}"


async def run_rounds(
    off: Deployment, on: Deployment, sink_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"off": [], "on": []}
    ratios: list[float] = []
    latencies: list[float] = []
    totals = {"missing": 0, "unverified": 0, "incomplete_rounds": 0, "callbacks": 0}
    cpu_s = {mode: dict.fromkeys(ROLES, 0.0) for mode in ("off", "on")}
    for up, url in ((off, None), (on, f"{sink_url}/cb")):  # warm-up, not counted
        await submit_round(up, count=args.warmup, clients=args.clients, deadline_s=30, callback_url=url)
    for n in range(args.rounds):
        order = ("off", "on") if n % 2 == 0 else ("on", "off")
        this: dict[str, float] = {}
        for mode in order:
            up, url = (off, None) if mode == "off" else (on, f"{sink_url}/cb")
            before = cpu_by_role(up)
            result = await submit_round(
                up, count=args.count, clients=args.clients, deadline_s=args.deadline_s, callback_url=url
            )
            totals["incomplete_rounds"] += not result["complete"]
            this[mode] = result["per_s"] or 0.0
            rates[mode].append(this[mode])
            if mode == "on":
                found = await callback_latencies(on, sink_url, result["ids"])
                latencies += found["latencies_ms"]
                for key in ("missing", "unverified", "callbacks"):
                    totals[key] += found[key]
            # Up to the last callback: the whole of each message's work.
            for role, seconds in cpu_by_role(up).items():
                cpu_s[mode][role] += seconds - before[role]
            print(f"round {n + 1} {mode}: {this[mode]:.0f}/s", file=sys.stderr)
        if this["off"]:
            ratios.append(this["on"] / this["off"])
    paced = await paced_latency(on, sink_url, args) if args.paced_rate > 0 else None
    return {
        "rates": rates,
        "ratios": ratios,
        "latencies": latencies,
        "totals": totals,
        "cpu_s": cpu_s,
        "paced": paced,
    }


async def paced_latency(on: Deployment, sink_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Report->callback latency at a rate the relay keeps up with: a saturating burst measures the
    queue its callbacks wait in, not how soon a report reaches the customer."""
    count = round(args.paced_rate * args.paced_s)
    result = await submit_round(
        on,
        count=count,
        clients=args.clients,
        deadline_s=args.paced_s + args.deadline_s,
        callback_url=f"{sink_url}/cb",
        rate=args.paced_rate,
    )
    found = await callback_latencies(on, sink_url, result["ids"])
    print(f"paced {args.paced_rate:.0f}/s: {result['per_s']}/s", file=sys.stderr)
    return {
        "rate_per_s": args.paced_rate,
        "seconds": args.paced_s,
        "per_s": result["per_s"],
        "complete": result["complete"],
        "missing": found["missing"],
        "unverified": found["unverified"],
        "report_to_callback_ms": _spread(found["latencies_ms"]),
    }


def _spread(latencies: list[float]) -> dict[str, Any]:
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "p50": None if p50 is None else round(p50, 1),
        "p99": None if p99 is None else round(p99, 1),
        "max": round(max(latencies), 1) if latencies else None,
        "samples": len(latencies),
    }


def summary(measured: dict[str, Any], args: argparse.Namespace, load_at_start: list[float]) -> dict[str, Any]:
    rates, latencies, totals = measured["rates"], measured["latencies"], measured["totals"]
    ratio = _median(measured["ratios"], digits=3)
    return {
        "what": "HTTP submit (one message per request) -> relay up -> simulated platform's receipt, with "
        "delivery reports and signed callbacks off, then on",
        "messages_per_round": args.count,
        "rounds": args.rounds,
        "clients": args.clients,
        "worker": WORKER,
        "callbacks": CALLBACKS,
        "off": {"per_s": rates["off"], "median_per_s": _median(rates["off"])},
        "on": {"per_s": rates["on"], "median_per_s": _median(rates["on"])},
        "ratios": [round(r, 3) for r in measured["ratios"]],
        "ratio_on_to_off": ratio,
        "ratio_target": RATIO_TARGET,
        "ratio_meets_target": ratio is not None and ratio >= RATIO_TARGET,
        # Under the saturating burst of the rounds: mostly the time a callback waits in its queue.
        "report_to_callback_ms": _spread(latencies),
        "paced": measured["paced"],
        # Where the CPU went, per message, up to the last delivered callback of an `on` round.
        "cpu_ms_per_message": {
            mode: {role: round(1000 * s / (args.count * args.rounds), 3) for role, s in used.items()}
            for mode, used in measured["cpu_s"].items()
        },
        "callbacks_received": totals["callbacks"],
        "delivered_callbacks_missing": totals["missing"],
        "signatures_failed": totals["unverified"],
        "incomplete_rounds": totals["incomplete_rounds"],
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }


def _median(values: list[float], *, digits: int = 1) -> float | None:
    return round(statistics.median(values), digits) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: checks the bench works")
    parser.add_argument("--count", type=int, default=4000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each deployment")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--deadline-s", type=float, default=120.0, help="longest a round may take")
    parser.add_argument(
        "--paced-rate", type=float, default=300.0, help="messages/s of the paced latency run (0: none)"
    )
    parser.add_argument("--paced-s", type=float, default=10.0, help="seconds of the paced latency run")
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds, args.warmup, args.deadline_s = 500, 2, 100, 60.0
        args.paced_s = min(args.paced_s, 3.0)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="relay-bench-reports-") as tmp, deployments(Path(tmp)) as found:
        off, on, sink_url = found
        measured = asyncio.run(run_rounds(off, on, sink_url, args))
    print(json.dumps(summary(measured, args, load_at_start), indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
