"""The whole benchmark suite in one command (`make bench`): bench/results/report.json and PNG plots.

Sections, each bounded in count and time, everything on 127.0.0.1 and stopped at the end:
  submit   submit throughput (single, batch) and latency against the raw confirmed-publish ceiling
           measured in the same run (bench.bench_submit, as a child process)
  e2e      end-to-end delivery rate through the workers, batch 1 and 100 (bench.bench_e2e, as a child)
  outage   a `relay up` deployment under steady submits, site a's platform down then black-holed for the
           middle third: delivered/s per site, failover gap, loss, and every process's RSS (bench.outage)
  backlog  10k, 100k, 200k queued jobs: publish time, drain rate, worker RSS while draining (bench.backlog)
  platforms  each platform kind against the real program (the simulated SMSC, Jasmin, Kannel): its adapter
           alone, and the whole relay from HTTP submit to the platform's receipt (bench.bench_platforms, as
           a child; a platform that is not installed is a row that says so)
  reports  `relay up` with delivery reports and signed callbacks off, then on, in alternating rounds: the
           end-to-end rate of each and their ratio, and the time from a platform's report to the
           customer's callback, p50 and p99 (bench.bench_reports, as a child)
  kannel   the whole relay against two real Kannels, one message per request, one load generator (wrk):
           end-to-end and accept-only rates, their relay/Kannel ratios, CPU per message per process kind
           and py-spy profiles of the ingress and a worker (bench.bench_kannel, as a child; needs wrk)

Every figure is compared with its target and the report says by how much a missed one is missed. On a
machine whose cores other work shares the figures are noisy; the report records the load average.

Run: `python -m bench.run_all [--quick] [--only submit e2e outage backlog platforms reports kannel]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import plots
from bench.backlog import run_backlog
from bench.outage import outage_deployment, run_outage
from bench.report import evaluate

SECTIONS = ("submit", "e2e", "outage", "backlog", "platforms", "reports", "kannel")
OUTAGE_PLATFORM_TIMEOUT_S = 2.0
console = Console(stderr=True)


def run_child_json(module: str, args: list[str], *, timeout_s: float) -> dict[str, Any]:
    """Run `python -m module args` and read the one JSON document it prints."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        timeout=timeout_s,
        check=False,
        text=True,
    )
    stdout = completed.stdout.strip()
    start = stdout.find("{")
    if completed.returncode != 0 or start < 0:
        raise RuntimeError(
            f"{module} exited {completed.returncode}: {completed.stderr.strip()[-1500:] or stdout[-1500:]}"
        )
    document: dict[str, Any] = json.loads(stdout[start:])
    return document


def submit_section(quick: bool) -> dict[str, Any]:
    return run_child_json("bench.bench_submit", ["--json", *(["--quick"] if quick else [])], timeout_s=600)


def e2e_section(quick: bool) -> dict[str, Any]:
    # The backlog section covers worker memory up to 200k queued; keep e2e's own backlog check small.
    extra = ["--quick"] if quick else ["--backlog", "20000", "--rss-watch-s", "8"]
    return run_child_json("bench.bench_e2e", extra, timeout_s=900)


def outage_section(quick: bool) -> dict[str, Any]:
    rate_per_s, duration_s = (100.0, 12.0) if quick else (150.0, 24.0)
    results: dict[str, Any] = {"platform_timeout_s": OUTAGE_PLATFORM_TIMEOUT_S}
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-outage-") as tmp,
        outage_deployment(Path(tmp), platform_timeout_s=OUTAGE_PLATFORM_TIMEOUT_S) as up,
    ):
        for fault in ("down", "blackhole"):
            console.log(f"outage: {fault}, {rate_per_s:g}/s for {duration_s:g} s")
            results[fault] = run_outage(up, fault=fault, rate_per_s=rate_per_s, duration_s=duration_s)
    return results


def backlog_section(quick: bool) -> dict[str, Any]:
    sizes, drain_timeout_s = ([2_000, 5_000, 10_000], 120.0) if quick else ([10_000, 100_000, 200_000], 150.0)
    results: dict[str, Any] = {"sizes": []}
    for size in sizes:
        console.log(f"backlog: {size:,} queued")
        with tempfile.TemporaryDirectory(prefix="relay-bench-backlog-") as tmp:
            results["sizes"].append(run_backlog(size, directory=Path(tmp), timeout_s=drain_timeout_s))
    return results


def platforms_section(quick: bool) -> dict[str, Any]:
    counts = ["--messages", "300", "--e2e-messages", "500"] if quick else []
    with tempfile.TemporaryDirectory(prefix="relay-bench-platforms-") as tmp:
        output = Path(tmp) / "platforms.json"
        # Its children (Jasmin, Kannel, the relay) write to stdout too: the figures come from the file.
        completed = subprocess.run(
            [sys.executable, "-m", "bench.bench_platforms", *counts, "--output", str(output)],
            capture_output=True,
            timeout=1200,
            check=False,
            text=True,
        )
        if completed.returncode != 0 or not output.exists():
            raise RuntimeError(
                f"bench.bench_platforms exited {completed.returncode}: {completed.stderr[-1500:]}"
            )
        document: dict[str, Any] = json.loads(output.read_text())
    return document


def reports_section(quick: bool) -> dict[str, Any]:
    return run_child_json("bench.bench_reports", ["--quick"] if quick else [], timeout_s=900)


def kannel_section(quick: bool) -> dict[str, Any]:
    return run_child_json("bench.bench_kannel", ["--quick"] if quick else [], timeout_s=900)


RUNNERS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "submit": submit_section,
    "e2e": e2e_section,
    "outage": outage_section,
    "backlog": backlog_section,
    "platforms": platforms_section,
    "reports": reports_section,
    "kannel": kannel_section,
}


def write_plots(sections: dict[str, Any], out: Path) -> list[str]:
    made = []
    candidates = [
        (plots.submit_plot, sections.get("submit"), "submit.png"),
        (plots.e2e_plot, sections.get("e2e"), "e2e.png"),
        (plots.backlog_plot, sections.get("backlog"), "backlog.png"),
        (plots.kannel_plot, sections.get("kannel"), "kannel.png"),
    ]
    outage = sections.get("outage") or {}
    for fault in ("down", "blackhole"):
        candidates.append((plots.outage_plot, outage.get(fault), f"outage_{fault}.png"))
    for plot, data, name in candidates:
        if data:
            path = plot(data, out / name)
            if path is not None:
                made.append(name)
    if outage.get("down"):
        path = plots.rss_plot(
            outage["down"].get("rss_samples") or {},
            out / "rss.png",
            title="RSS of every process through an outage",
        )
        if path is not None:
            made.append("rss.png")
    return made


def show(checks: list[dict[str, Any]]) -> None:
    table = Table(title="Benchmark targets (noisy when the CPU is shared)")
    for column in ("figure", "value", "target", "met", "missed by"):
        table.add_column(column)
    for c in checks:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']:.3g} {c['unit']}"
        table.add_row(
            c["name"], value, f"{c['comparison']} {c['target']:g} {c['unit']}", met, c["missed_by"] or ""
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes: checks the suite runs (~5 min)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.time()
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "caveat": "figures measured while other work shares the CPU are noisy; compare quiet-machine runs",
        "seconds": {},
        "sections": {},
        "errors": {},
    }
    for name in args.only:
        console.rule(f"[bold]{name}")
        began = time.time()
        try:
            report["sections"][name] = RUNNERS[name](args.quick)
        except Exception as exc:  # one broken section must not lose the others' figures
            report["errors"][name] = f"{exc!r}"
            console.print(f"[red]{name} failed[/]: {exc!r}\n{traceback.format_exc(limit=3)}")
        report["seconds"][name] = round(time.time() - began, 1)

    report["targets"] = [
        c.as_dict() for c in evaluate(report["sections"], blackhole_timeout_s=OUTAGE_PLATFORM_TIMEOUT_S)
    ]
    report["plots"] = write_plots(report["sections"], args.out)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"]["total"] = round(time.time() - started, 1)
    partial = args.out / "report.json.tmp"
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(args.out / "report.json")
    show(report["targets"])
    console.print(f"report: {args.out / 'report.json'}; plots: {', '.join(report['plots']) or 'none'}")
    if report["errors"]:
        console.print(f"[red]sections that failed[/]: {', '.join(report['errors'])}")
        sys.exit(1)


if __name__ == "__main__":
    main()
