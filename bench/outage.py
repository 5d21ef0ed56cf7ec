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
import os
import re
import signal
import subprocess
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

from ops.drill import Drill, DrillPlan
from shared.settings import Settings, load_settings, use_config_file
from tests.helpers import delete_broker_names, free_port

RELAY = [sys.executable, "-m", "ops.cli"]
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
UP_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    path: Path
    api_url: str
    platform_ports: dict[str, int]
    admin_ports: dict[str, int]

    def admin_url(self, site: str) -> str:
        return f"http://127.0.0.1:{self.admin_ports[site]}"


def write_config(
    directory: Path, *, broker_url: str, prefix: str, platform_timeout_s: float = 1.0, concurrency: int = 64
) -> BenchConfig:
    """A configuration on free ports with its own broker prefix, store and spool."""
    api_port = free_port()
    platform_ports = {site: free_port() for site in ("a", "b")}
    admin_ports = {site: free_port() for site in ("a", "b")}
    sites = [
        f'[sites.{site}]\nurl = "http://127.0.0.1:{platform_ports[site]}/v1.0/message"\n'
        f'sim_admin_url = "http://127.0.0.1:{admin_ports[site]}"\ntimeout_s = {platform_timeout_s}\n'
        for site in ("a", "b")
    ]
    path = directory / "relay.toml"
    path.write_text(
        f'[broker]\nurl = "{broker_url}"\nprefix = "{prefix}"\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{directory / "relay.db"}"\n'
        f'[ingress]\nhost = "127.0.0.1"\nport = {api_port}\nspool_path = "{directory / "spool.db"}"\n'
        f"[worker]\nconcurrency = {concurrency}\nmetrics_port = 0\nheartbeat_interval_s = 1.0\n"
        "breaker_cooldown_s = 1.0\nretry_delays_s = [1, 2, 5]\ngrace_s = 3.0\n"
        '[log]\nlevel = "WARNING"\n' + "".join(sites)
    )
    return BenchConfig(
        path=path,
        api_url=f"http://127.0.0.1:{api_port}",
        platform_ports=platform_ports,
        admin_ports=admin_ports,
    )


@contextlib.contextmanager
def child(args: list[str], *, log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own group, SIGTERMed (then SIGKILLed) with its children at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Up:
    config: Path
    settings: Settings
    run_dir: Path
    pids: dict[str, int]


@contextlib.contextmanager
def relay_up(
    directory: Path, *, broker_url: str = BROKER_URL, platform_timeout_s: float = 1.0
) -> Iterator[Up]:
    """`relay up` on free ports in `directory`, torn down (and its broker names deleted) at the end."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    config = write_config(
        directory, broker_url=broker_url, prefix=prefix, platform_timeout_s=platform_timeout_s
    ).path
    run_dir = directory / "run"
    log = directory / "up.log"
    args = [*RELAY, "--config", str(config), "up", "--run-dir", str(run_dir), "--metrics-base-port", "0"]
    try:
        with child(args, log=log, cwd=directory) as process:
            pids = _wait_for_banner(log, process)
            use_config_file(config)
            yield Up(config=config, settings=load_settings(), run_dir=run_dir, pids=pids)
    finally:
        use_config_file(None)
        asyncio.run(delete_topology(broker_url, load_settings(broker={"url": broker_url, "prefix": prefix})))


def _wait_for_banner(log: Path, process: subprocess.Popen[bytes]) -> dict[str, int]:
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(r"Processes:\s+(.+)", text)
        if found:
            return {name: int(pid) for name, pid in (item.split("=") for item in found.group(1).split(", "))}
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"relay up did not become ready:\n{log.read_text(errors='replace')[-3000:]}")


async def delete_topology(broker_url: str, settings: Settings) -> None:
    await delete_broker_names(broker_url, settings)


def per_second(times: list[float], *, start: float, seconds: int) -> list[int]:
    """How many of `times` fall into each whole second after `start`."""
    counts = [0] * seconds
    for t in times:
        index = int(t - start)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


async def _drill(
    up: Up, *, fault: str, rate_per_s: float, duration_s: float
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
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=128)) as client:
        drill = Drill(
            config=up.settings, plan=plan, client=client, say=lambda line: print(line, file=sys.stderr)
        )
        verdict = await drill.run()
    return drill, verdict.as_dict()


def run_outage(up: Up, *, fault: str, rate_per_s: float, duration_s: float) -> dict[str, object]:
    """One outage run against a live `relay up`; its verdict, per-second series and RSS."""
    with RssSampler(pids=dict(up.pids)) as rss:
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
    with tempfile.TemporaryDirectory(prefix="relay-outage-") as tmp, relay_up(Path(tmp)) as up:
        result = run_outage(up, fault=args.fault, rate_per_s=args.rate, duration_s=args.duration_s)
    result.pop("rss_samples")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
