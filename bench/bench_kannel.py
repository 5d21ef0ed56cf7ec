"""The whole relay against Kannel 1.4.5, one message per request, with one load generator (wrk).

Everything on this machine and on 127.0.0.1, measured in one run:
  kannel e2e     two real Kannels (bearerbox + smsbox + fakesmsc) as the two sites; wrk sends sendsms GETs
                 over 32 keep-alive connections (16 to each smsbox, one wrk each); delivered/s = messages
                 the fakesmscs logged over the time from the first request to the last delivery
  relay e2e      `relay up` (ingress, workers per site, its simulated platforms; no delivery reports, as
                 fakesmsc sends none) for each shape asked for; wrk POSTs /v1/messages over 32 keep-alive
                 connections; delivered/s the same way, from the simulators' receipts
  kannel accept  fresh Kannels without an SMSC: smsbox's accepted/s (bearerbox queues them)
  relay accept   `relay ingress` alone with the broker, no workers: accepted/s (every 202 is confirmed by
                 the broker or fsynced to the spool); the jobs it queued are deleted with its topology
Rounds alternate Kannel and relay (the order turns each round); the ratios are the medians of the rounds'
relay/Kannel ratios, against targets of 1.0 (e2e) and 0.6 (accept-only). CPU per message is given per kind
of process (the broker's includes whatever else uses it meanwhile). An extra relay e2e round, not counted,
is profiled with py-spy: the ingress and one worker, each one's top functions by own time.

Run: `python -m bench.bench_kannel [--quick] [--rounds N] [--duration-s S] [--shapes p1w1c64 ...]`;
JSON on stdout, progress on stderr. Needs wrk (`apt-get install -y wrk`) and Kannel (kannel, kannel-extras).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import profiles, wrk
from bench.bench_submit import migrated_store_key
from bench.kannel_parts import (
    TARGETS,
    LogLineCounter,
    Shape,
    broker_processes,
    cpu_s,
    median,
    processes_of,
    ratio_check,
    relay_kinds,
)
from bench.raw_http import receipt_counter
from ops.harness.deployment import (
    Deployment,
    delete_topology,
    http_json_sites_on_free_ports,
    local_config,
    relay_up,
    settings_of,
)
from ops.harness.kannel import KannelInstance, find_binaries, running_kannel
from ops.harness.processes import RELAY, spawned, wait_for_port

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONNECTIONS = 32
DEFAULT_SHAPES = ("p1w1c64",)
POLL_S = 0.05
DRAIN_DEADLINE_S = 60.0  # longest wait for the last delivery after wrk stops
PROFILE_S = 4.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What one round drives and watches: wrk's loads, the delivered count, the processes by kind."""

    loads: list[wrk.Load]
    kinds: dict[str, list[int]]
    delivered: Callable[[], Awaitable[int]] | None = None  # None: accept-only


async def measure(
    target: Target, *, duration_s: float, during: Callable[[], Awaitable[Any]] | None = None
) -> dict[str, Any]:
    """One round: wrk for `duration_s`; with a delivered count, wait (bounded) for the last delivery."""
    processes = {kind: processes_of(pids) for kind, pids in target.kinds.items()}
    processes["broker"] = broker_processes()
    before = {kind: cpu_s(procs) for kind, procs in processes.items()}
    start_count = await target.delivered() if target.delivered else 0
    began = time.perf_counter()
    load = asyncio.ensure_future(wrk.run_loads(target.loads, duration_s=duration_s))
    extra = asyncio.ensure_future(during()) if during else None
    delivered, last_s = 0, 0.0
    if target.delivered is not None:
        while time.perf_counter() - began < duration_s + DRAIN_DEADLINE_S:
            delivered = await target.delivered() - start_count
            last_s = time.perf_counter() - began
            if load.done() and delivered >= load.result()[0].accepted:
                break
            await asyncio.sleep(POLL_S)
    result, wrk_cpu_s = await load
    used = {kind: cpu_s(procs) - before[kind] for kind, procs in processes.items()}
    used["wrk"] = wrk_cpu_s
    messages = delivered if target.delivered else result.accepted
    round_: dict[str, Any] = {
        **result.as_dict(),
        "cpu_ms_per_message": {k: round(1000 * s / max(1, messages), 3) for k, s in used.items()},
    }
    if target.delivered is not None:
        round_ |= {
            "delivered": delivered,
            "delivery_seconds": round(last_s, 3),
            "delivered_per_s": round(delivered / last_s, 1) if last_s else None,
            "complete": delivered >= result.accepted,
        }
    if extra is not None:
        round_["profile"] = await extra
    return round_


def _script(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(text)
    return path


def kannel_target(kannels: list[KannelInstance], directory: Path) -> Target:
    """Both Kannels, each half the connections from a wrk of its own (wrk drives one host:port)."""
    per = CONNECTIONS // len(kannels)
    loads = [
        wrk.Load(
            url=f"http://127.0.0.1:{k.sendsms_port}",
            script=_script(directory, f"kannel-{i}", wrk.kannel_script(k.username, k.password)),
            connections=per,
            threads=1,
        )
        for i, k in enumerate(kannels)
    ]
    counters = [LogLineCounter(k.fakesmsc_log()) for k in kannels if k.with_smsc]

    async def delivered() -> int:
        return sum(c.count() for c in counters)

    kinds = {"kannel_boxes": [pid for k in kannels for n, pid in k.pids().items() if "box" in n]}
    kinds["fakesmsc"] = [pid for k in kannels for n, pid in k.pids().items() if n.startswith("fakesmsc")]
    return Target(loads=loads, kinds=kinds, delivered=delivered if counters else None)


def relay_load(directory: Path, name: str, port: int, key: str) -> wrk.Load:
    script = _script(directory, name, wrk.relay_script(key))
    return wrk.Load(url=f"http://127.0.0.1:{port}", script=script, connections=CONNECTIONS, threads=2)


@contextlib.contextmanager
def lone_ingress(directory: Path, processes: int) -> Iterator[tuple[int, str, int]]:
    """`relay ingress` with no worker: (port, API key, pid); its topology (and the jobs queued in it)
    deleted at the end."""
    directory.mkdir(parents=True, exist_ok=True)
    config = local_config(
        directory,
        broker_url=BROKER_URL,
        prefix=f"benchkac{uuid.uuid4().hex[:6]}",
        sites=http_json_sites_on_free_ports(),
        ingress={"processes": processes},
    )
    settings = settings_of(config)
    try:
        key = asyncio.run(migrated_store_key(settings.store))
        args = [*RELAY, "--config", str(config), "ingress"]
        with spawned(args, log=directory / "ingress.log") as proc:
            wait_for_port(settings.ingress.port, timeout_s=60)
            yield settings.ingress.port, key, proc.pid
    finally:
        asyncio.run(delete_topology(BROKER_URL, config))


def start_relays(stack: contextlib.ExitStack, directory: Path, shapes: list[Shape]) -> dict[str, Deployment]:
    ups = {}
    for shape in shapes:
        folder = directory / shape.name
        folder.mkdir()
        log(f"relay up {shape.name}")
        ups[shape.name] = stack.enter_context(
            relay_up(
                folder,
                broker_url=BROKER_URL,
                prefix=f"benchkan{uuid.uuid4().hex[:6]}",
                worker={"concurrency": shape.concurrency, "heartbeat_interval_s": 1.0},
                sites=http_json_sites_on_free_ports(timeout_s=5.0),
                reports=False,
                workers_per_site=shape.workers_per_site,
                ingress={"processes": shape.processes},
            )
        )
    return ups


@contextlib.asynccontextmanager
async def relay_target(up: Deployment, directory: Path, name: str):
    port = urlsplit(up.api_url).port or 0
    admin_ports = [urlsplit(sim.admin_url).port or 0 for sim in up.simulators.values()]
    async with receipt_counter(admin_ports) as received:
        yield Target(
            loads=[relay_load(directory, name, port, up.key)],
            kinds=relay_kinds(up.child_pids),
            delivered=received,
        )


async def profiled_round(
    up: Deployment, target: Target, directory: Path, duration_s: float
) -> dict[str, Any]:
    """A relay e2e round with py-spy on the ingress (its forked processes too) and one worker."""
    seconds = min(PROFILE_S, max(1.0, duration_s - 2))
    worker = next(pid for name, pid in sorted(up.child_pids.items()) if name.startswith("worker-"))

    async def both() -> dict[str, Any]:
        await asyncio.sleep(1.0)  # past the connections' start
        ingress, worker_profile = await asyncio.gather(
            profiles.record(
                up.child_pids["ingress"], seconds=seconds, output=directory / "ingress.spy", subprocesses=True
            ),
            profiles.record(worker, seconds=seconds, output=directory / "worker.spy"),
        )
        return {"seconds": seconds, "ingress": ingress, "worker": worker_profile}

    return await measure(target, duration_s=duration_s, during=both)


async def accept_kannel_round(binaries: dict[str, str], directory: Path, duration_s: float) -> dict[str, Any]:
    """smsbox's accept rate: fresh Kannels with no SMSC (bearerbox queues), killed after the round."""
    with contextlib.ExitStack() as stack:
        kannels = [
            stack.enter_context(running_kannel(directory / f"accept-{site}", binaries, with_smsc=False))
            for site in ("a", "b")
        ]
        return await measure(kannel_target(kannels, directory), duration_s=duration_s)


async def rounds(
    args: argparse.Namespace,
    directory: Path,
    kannels: list[KannelInstance],
    ups: dict[str, Deployment],
    lone: tuple[int, str, int],
) -> dict[str, Any]:
    binaries = find_binaries() or {}
    measured: dict[str, list[dict[str, Any]]] = {"kannel_e2e": [], "kannel_accept": [], "relay_accept": []}
    measured |= {f"relay_e2e_{name}": [] for name in ups}
    accept_target = Target(
        loads=[relay_load(directory, "accept", lone[0], lone[1])], kinds={"ingress": [lone[2]]}
    )
    async with contextlib.AsyncExitStack() as stack:
        relays = {
            name: await stack.enter_async_context(relay_target(up, directory, name))
            for name, up in ups.items()
        }
        kannel = kannel_target(kannels, directory)
        log("warm-up")
        for target in [kannel, *relays.values(), accept_target]:
            await measure(target, duration_s=2.0)
        for n in range(args.rounds):
            sides: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
                ("kannel_e2e", lambda: measure(kannel, duration_s=args.duration_s)),
                *[
                    (f"relay_e2e_{name}", lambda t=t: measure(t, duration_s=args.duration_s))
                    for name, t in relays.items()
                ],
                (
                    "kannel_accept",
                    functools.partial(accept_kannel_round, binaries, directory / f"r{n}", args.duration_s),
                ),
                ("relay_accept", lambda: measure(accept_target, duration_s=args.duration_s)),
            ]
            # Counts are taken from where each round starts: nothing needs resetting between rounds.
            for name, run in sides if n % 2 == 0 else list(reversed(sides)):
                result = await run()
                measured[name].append(result)
                rate = result.get("delivered_per_s", result["accepted_per_s"])
                log(f"round {n + 1} {name}: {rate}/s")
        first = next(iter(ups))
        log(f"profiled round of {first}")
        profile = await profiled_round(ups[first], relays[first], directory, args.duration_s)
    return {"measured": measured, "profile": profile}


def summary(
    found: dict[str, Any], args: argparse.Namespace, shapes: list[Shape], load: list[float]
) -> dict[str, Any]:
    measured = found["measured"]

    def rates(name: str, key: str) -> list[float]:
        return [float(r[key] or 0.0) for r in measured[name]]

    default = f"relay_e2e_{shapes[0].name}"
    kannel_e2e = rates("kannel_e2e", "delivered_per_s")
    return {
        "what": "one message per request, wrk with 32 keep-alive connections, all on this machine",
        "duration_s": args.duration_s,
        "rounds": args.rounds,
        "relay_shape": shapes[0].name,
        "ratios": {
            "e2e_single": ratio_check(
                "end to end, one message per request, relay / Kannel",
                rates(default, "delivered_per_s"),
                kannel_e2e,
                TARGETS["e2e_single"],
            ),
            "accept_single": ratio_check(
                "accept-only, one message per request, relay / Kannel smsbox",
                rates("relay_accept", "accepted_per_s"),
                rates("kannel_accept", "accepted_per_s"),
                TARGETS["accept_single"],
            ),
        },
        # For comparison: what each side accepted while it was also delivering (the e2e rounds).
        "accepted_while_delivering_per_s": {
            "kannel": median(rates("kannel_e2e", "accepted_per_s")),
            "relay": median(rates(default, "accepted_per_s")),
        },
        "shapes": {
            shape.name: {
                "median_delivered_per_s": median(rates(f"relay_e2e_{shape.name}", "delivered_per_s")),
                "ratios_to_kannel": ratio_check(
                    shape.name, rates(f"relay_e2e_{shape.name}", "delivered_per_s"), kannel_e2e, 1.0
                )["ratios"],
            }
            for shape in shapes
        },
        "rounds_detail": measured,
        "profile": found["profile"],
        "profile_note": "own time per function; `Runner.run (asyncio/runners.py)` is uvloop's native loop "
        "(socket reads and writes, its C callbacks); the ingress's aiosqlite thread is the store's writes",
        "load_average": {"start": load, "end": [round(x, 2) for x in os.getloadavg()]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short rounds: checks the bench works")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side (at least 2)")
    parser.add_argument("--duration-s", type=float, default=8.0, help="wrk's duration per round")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=list(DEFAULT_SHAPES),
        help="relay shapes pNwNcN: ingress processes, workers per site, worker concurrency; "
        "the first is the one the ratios use",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration_s = 1, 3.0
    shapes = [Shape.parse(text) for text in args.shapes]
    wrk.wrk_binary()
    binaries = find_binaries()
    if binaries is None:
        print(json.dumps({"skipped": "Kannel (kannel, kannel-extras) is not installed"}))
        return
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="relay-bench-kannel-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        kannels = [
            stack.enter_context(running_kannel(directory / f"kannel-{site}", binaries)) for site in ("a", "b")
        ]
        ups = start_relays(stack, directory, shapes)
        lone = stack.enter_context(lone_ingress(directory / "accept", shapes[0].processes))
        found = asyncio.run(rounds(args, directory, kannels, ups, lone))
    print(json.dumps(summary(found, args, shapes, load), indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
