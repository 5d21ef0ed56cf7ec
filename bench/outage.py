"""Throughput through a site outage: a `relay up` deployment on free ports, steady submits, one site's
platform down (or black-holed) for the middle third, delivered/s per site, and every process's RSS.

It drives the same code as `relay drill` (traffic, fault, receipts), so its failover gap means exactly what
the drill's does (see `ops.drill_verdict`). Run alone: `python -m bench.outage --fault down`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from ops.drill_plan import DrillPlan, DrillTarget
from ops.drill_run import Drill
from ops.harness.deployment import Deployment, http_json_sites_on_free_ports, relay_up, settings_of
from ops.supervisor import relay_command

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Workers as a deployment runs them (concurrency 64, the default breaker threshold), with a breaker
# cool-down and retry tiers short enough for a run of seconds.
BENCH_WORKER = {
    "concurrency": 64,
    "heartbeat_interval_s": 1.0,
    "breaker_failure_threshold": 5,
    "retry_delays_s": [1, 2, 5],
}


@dataclass(slots=True)
class RssSampler:
    """Samples the resident memory of named processes every `interval_s` in a background thread."""

    pids: dict[str, int]
    interval_s: float = 0.5
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        started = time.time()
        while not self._stop.is_set():
            for name, pid in list(self.pids.items()):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss = psutil.Process(pid).memory_info().rss
                    if rss == 0:  # not yet exec'd
                        continue
                    self.samples.setdefault(name, []).append((time.time() - started, rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary_mb(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "max_mb": round(max(r for _, r in s) / 2**20, 1),
                "mean_mb": round(sum(r for _, r in s) / len(s) / 2**20, 1),
                "first_mb": round(s[0][1] / 2**20, 1),
                "last_mb": round(s[-1][1] / 2**20, 1),
            }
            for name, s in self.samples.items()
            if s
        }


@contextlib.contextmanager
def outage_deployment(
    directory: Path, *, broker_url: str = BROKER_URL, platform_timeout_s: float = 1.0
) -> Iterator[Deployment]:
    """`relay up` on free ports in `directory`, torn down (and its broker names deleted) at the end."""
    with relay_up(
        directory,
        broker_url=broker_url,
        prefix=f"bench{uuid.uuid4().hex[:8]}",
        worker=BENCH_WORKER,
        sites=http_json_sites_on_free_ports(timeout_s=platform_timeout_s),
        broker={"confirm_timeout_s": 1.0},
    ) as up:
        yield up


def per_second(times: list[float], *, start: float, seconds: int) -> list[int]:
    """How many of `times` fall into each whole second after `start`."""
    counts = [0] * seconds
    for t in times:
        index = int(t - start)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


async def _drill(
    up: Deployment, *, fault: str, rate_per_s: float, duration_s: float
) -> tuple[Drill, dict[str, object]]:
    plan = DrillPlan(
        site="a",
        fault=fault,
        messages=int(rate_per_s * duration_s),
        rate_per_s=rate_per_s,
        settle_timeout_s=60.0,
        allow_real_platforms=False,
        run_dir=up.run_dir,
    )
    target = DrillTarget(
        config=settings_of(up.config),
        relay=relay_command(up.config),
        simulators={site: sim.admin_url for site, sim in up.simulators.items()},
    )
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=128)) as client:
        drill = Drill(target=target, plan=plan, client=client, say=lambda line: print(line, file=sys.stderr))
        verdict = await drill.run()
    return drill, verdict.as_dict()


def run_outage(up: Deployment, *, fault: str, rate_per_s: float, duration_s: float) -> dict[str, object]:
    """One outage run against a live `relay up`; its verdict, per-second series and RSS."""
    with RssSampler(pids=dict(up.child_pids)) as rss:
        started = time.time()
        drill, verdict = asyncio.run(_drill(up, fault=fault, rate_per_s=rate_per_s, duration_s=duration_s))
    observation = drill.observation
    assert observation is not None
    accepted_times = sorted(observation.accepted.values())
    origin = accepted_times[0] if accepted_times else started
    receipts_end = max((t for r in observation.receipts.values() for t in r.values()), default=origin)
    seconds = int(receipts_end - origin) + 2
    accepted = set(observation.accepted)
    series = {
        site: per_second([t for m, t in r.items() if m in accepted], start=origin, seconds=seconds)
        for site, r in observation.receipts.items()
    }
    return {
        "fault": fault,
        "rate_per_s": rate_per_s,
        "duration_s": duration_s,
        "verdict": verdict,
        "pace": drill.pace.as_dict(),
        "fault_window_s": [
            round(observation.fault_at - origin, 3),
            round(observation.cleared_at - origin, 3),
        ],
        "delivered_per_s": series,
        "submitted_per_s": per_second(accepted_times, start=origin, seconds=seconds),
        "rss": rss.summary_mb(),
        "rss_samples": {name: [[round(t, 2), r] for t, r in s] for name, s in rss.samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fault", default="down", choices=["down", "blackhole", "error"])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration-s", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-outage-") as tmp, outage_deployment(Path(tmp)) as up:
        result = run_outage(up, fault=args.fault, rate_per_s=args.rate, duration_s=args.duration_s)
    result.pop("rss_samples")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
