"""The pieces of the Kannel comparison (bench.bench_kannel): relay shapes, counters of delivered
messages, CPU per kind of process, and the ratios against their targets."""

from __future__ import annotations

import contextlib
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# relay / Kannel in the same run: end to end, one message per request; accept-only (the relay confirms or
# fsyncs each message before it answers, Kannel does not).
TARGETS = {"e2e_single": 1.0, "accept_single": 0.6}
_SHAPE = re.compile(r"^p(?P<processes>\d+)w(?P<workers>\d+)c(?P<concurrency>\d+)$")


@dataclass(frozen=True, slots=True)
class Shape:
    """A deployment's shape: ingress processes, workers per site, platform requests per worker."""

    processes: int
    workers_per_site: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"p{self.processes}w{self.workers_per_site}c{self.concurrency}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """`p2w1c64`: 2 ingress processes, 1 worker per site, concurrency 64."""
        match = _SHAPE.match(text)
        if match is None:
            raise ValueError(f"a shape is pNwNcN (e.g. p1w1c64), not {text!r}")
        return cls(int(match["processes"]), int(match["workers"]), int(match["concurrency"]))


class LogLineCounter:
    """Lines containing `needle` in a growing log file, read incrementally: re-reading a fakesmsc log of
    tens of thousands of lines at every poll would cost the CPU being measured."""

    def __init__(self, path: Path, needle: bytes = b"Got message") -> None:
        self._path = path
        self._needle = needle
        self._offset = 0
        self._count = 0

    def count(self) -> int:
        if not self._path.exists():
            return self._count
        with self._path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # a line still being written counts once it ends
        self._count += chunk[:complete].count(self._needle)
        self._offset += complete
        return self._count


def processes_of(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes (and their children: an ingress of several processes forks them) still alive."""
    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            found += [process, *process.children(recursive=True)]
    return found


def broker_processes() -> list[psutil.Process]:
    """The local RabbitMQ's Erlang VM (shared with whatever else uses the broker meanwhile)."""
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("beam")]


def cpu_s(processes: Iterable[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def relay_kinds(child_pids: dict[str, int]) -> dict[str, list[int]]:
    """`relay up`'s children by kind, as its banner names them."""
    kinds: dict[str, list[int]] = {"ingress": [], "workers": [], "platforms": [], "callbacks": []}
    for name, pid in child_pids.items():
        if name == "ingress":
            kinds["ingress"].append(pid)
        elif name.startswith("worker-"):
            kinds["workers"].append(pid)
        elif name.startswith("callbacks"):
            kinds["callbacks"].append(pid)
        else:
            kinds["platforms"].append(pid)
    return kinds


def median(values: list[float], *, digits: int = 1) -> float | None:
    return round(statistics.median(values), digits) if values else None


def ratio_check(name: str, relay: list[float], kannel: list[float], target: float) -> dict[str, Any]:
    """The median of the rounds' relay/Kannel ratios (each round's pair measured back to back) against
    `target`; met is None when a side has no figure."""
    ratios = [r / k for r, k in zip(relay, kannel, strict=False) if k]
    value = median(ratios, digits=3)
    return {
        "name": name,
        "relay_per_s": median(relay),
        "kannel_per_s": median(kannel),
        "ratios": [round(r, 3) for r in ratios],
        "ratio": value,
        "target": target,
        "met": None if value is None else value >= target,
    }
