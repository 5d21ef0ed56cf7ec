"""Single-submit CPU of two or more ingress builds or HTTP servers, measured in the same run, alternating.

`bench.bench_submit` measures one ingress against the broker's ceiling; on this shared, noisy machine two
of its runs minutes apart differ by more than most changes to the submit path. Here every variant is an
ingress process of its own (its own scratch store, spool and topology prefix), all running at once, and
each round sends `--count` single submits from 64 keep-alive clients to each variant in turn, the order
turned every round. The figure per variant is the median over the rounds of its server CPU per accepted
submit (the process and its children) and of its rate.

A variant is `NAME=COMMAND`, the command run with the relay's settings in its environment
(`RELAY_INGRESS__PORT` among them); `--cwd NAME=DIR` runs it from DIR (another checkout of the code, for a
before/after). Without variants it compares the ingress with itself (A/A: the noise). Example:
`python -m bench.bench_submit_ab --variant old='python -m ops.cli ingress' --cwd old=/tmp/base
--variant new='python -m ops.cli ingress' --rounds 6`. Each variant's pid is printed at start, for a
profiler to attach to.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import statistics
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop

from bench.bench_submit import (
    BROKER_URL,
    CLIENTS,
    closed_loop,
    ingress_env,
    message,
    migrated_store_key,
    wait_ready,
)
from bench.raw_http import RawPool
from ops.harness.cleanup import delete_broker_names
from ops.harness.processes import free_port, spawned
from shared.settings import Settings, StoreSettings

DEFAULT_COMMAND = f"{shlex.quote(sys.executable)} -m ops.cli ingress"


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    command: str
    cwd: Path | None


@dataclass(slots=True)
class Running:
    variant: Variant
    port: int
    key: str
    prefix: str
    process: psutil.Process
    rounds: list[dict[str, Any]]


def cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = each.cpu_times()
            total += times.user + times.system
    return total


async def one_round(target: Running, count: int) -> dict[str, Any]:
    async with RawPool(port=target.port, key=target.key, size=CLIENTS) as client:
        answers: dict[str, int] = {}

        async def single(n: int) -> int:
            status, _ = await client.post("/v1/messages", orjson.dumps(message(n)))
            answers[str(status)] = answers.get(str(status), 0) + 1
            return 1 if status == 202 else 0

        await closed_loop(200, CLIENTS, single)  # warm the connections of this round
        answers.clear()
        before = cpu_s(target.process)
        elapsed, latencies, accepted = await closed_loop(count, CLIENTS, single)
        spent_ms = (cpu_s(target.process) - before) * 1000
    return {
        "per_s": round(accepted / elapsed, 1),
        "cpu_ms_per_submit": round(spent_ms / accepted, 4) if accepted else None,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "answers": answers,
    }


async def compare(variants: list[Variant], *, rounds: int, count: int, processes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relay-ab-") as scratch, contextlib.ExitStack() as stack:
        running: list[Running] = []
        try:
            for variant in variants:
                workdir = Path(scratch) / variant.name
                workdir.mkdir()
                key = await migrated_store_key(
                    StoreSettings(url=f"sqlite+aiosqlite:///{workdir / 'relay.db'}")
                )
                prefix, port = f"benchab{uuid.uuid4().hex[:8]}", free_port()
                env = ingress_env(workdir, prefix=prefix, port=port, processes=processes)
                proc = stack.enter_context(
                    spawned(
                        shlex.split(variant.command),
                        cwd=variant.cwd,
                        env=env,
                        log=workdir / "ingress.log",
                        stop_timeout_s=15,
                    )
                )
                running.append(Running(variant, port, key, prefix, psutil.Process(proc.pid), []))
            for target in running:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{target.port}", timeout=10) as probe:
                    await wait_ready(probe)
                print(f"{target.variant.name}: pid {target.process.pid}", file=sys.stderr)
            for n in range(rounds):
                for target in running[n % len(running) :] + running[: n % len(running)]:
                    target.rounds.append(await one_round(target, count))
                    print(f"round {n} {target.variant.name}: {target.rounds[-1]}", file=sys.stderr)
        finally:
            stack.close()
            for target in running:
                settings = Settings(broker={"url": BROKER_URL, "prefix": target.prefix})
                await delete_broker_names(BROKER_URL, settings)
    return {
        target.variant.name: {
            "cpu_ms_per_submit_median": statistics.median(r["cpu_ms_per_submit"] for r in target.rounds),
            "per_s_median": statistics.median(r["per_s"] for r in target.rounds),
            "rounds": target.rounds,
        }
        for target in running
    }


def parse_variants(args: argparse.Namespace) -> list[Variant]:
    commands = dict(v.split("=", 1) for v in args.variant) or {"a": DEFAULT_COMMAND, "b": DEFAULT_COMMAND}
    cwds = dict(c.split("=", 1) for c in args.cwd)
    return [
        Variant(name, command, Path(cwds[name]) if name in cwds else None)
        for name, command in commands.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=COMMAND (repeat)")
    parser.add_argument("--cwd", action="append", default=[], help="NAME=DIR: run NAME's command from DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--count", type=int, default=10_000, help="single submits per variant and round")
    parser.add_argument("--processes", type=int, default=1, help="ingress.processes of every variant")
    args = parser.parse_args()
    report = uvloop.run(
        compare(parse_variants(args), rounds=args.rounds, count=args.count, processes=args.processes)
    )
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
