"""PNG plots of the benchmark report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # the backend is chosen above, before pyplot loads

MB = 2**20


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def submit_plot(submit: dict[str, Any], out: Path) -> Path | None:
    ceiling = (submit.get("ceiling") or {}).get("per_s")
    if not ceiling:
        return None
    fig, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["ceiling\n(aio-pika, asyncio)", "ceiling\n(aio-pika, uvloop)", "single", "batch (100)"]
    values = [
        ceiling,
        (submit.get("ceiling_uvloop") or {}).get("per_s", 0),
        (submit.get("single") or {}).get("per_s", 0),
        (submit.get("batch") or {}).get("per_s", 0),
    ]
    rates.bar(names, values, color=["#999999", "#cccccc", "#1f77b4", "#2ca02c"])
    rates.tick_params(axis="x", labelsize=8)
    rates.axhline(0.5 * ceiling, color="#1f77b4", linestyle="--", linewidth=1, label="single target 0.5 x")
    rates.axhline(0.8 * ceiling, color="#2ca02c", linestyle="--", linewidth=1, label="batch target 0.8 x")
    rates.set_ylabel("messages / s")
    rates.set_title("Submit throughput vs confirmed-publish ceiling")
    rates.legend(fontsize=8)
    phases = [p for p in ("single", "batch", "paced") if isinstance(submit.get(p), dict)]
    p50 = [submit[p].get("p50_ms", 0) for p in phases]
    p99 = [submit[p].get("p99_ms", 0) for p in phases]
    x = range(len(phases))
    latency.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    latency.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    latency.set_xticks(list(x), [f"{p}" + (" (per request)" if p == "batch" else "") for p in phases])
    latency.axhline(20, color="red", linestyle="--", linewidth=1, label="p99 target at 500/s: 20 ms")
    latency.set_yscale("log")
    latency.set_ylabel("ms")
    latency.set_title("Submit latency")
    latency.legend(fontsize=8)
    return _save(fig, out)


def e2e_plot(e2e: dict[str, Any], out: Path) -> Path | None:
    bars = [
        ("HTTP submit,\none per request", "http-single", 2000),
        ("HTTP batch submit,\nbatched delivery", "http-batched", 5000),
        ("workers alone,\nbatch 1", "single", 2000),
        ("workers alone,\nbatch 100", "batched", 5000),
    ]
    values = [(e2e.get(key) or {}).get("delivered_per_s") for _, key, _ in bars]
    if all(v is None for v in values):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    positions = range(len(bars))
    ax.bar(
        [label for label, _, _ in bars],
        [v or 0 for v in values],
        color=["#1f77b4", "#2ca02c", "#aec7e8", "#98df8a"],
    )
    ax.scatter(
        list(positions), [t for _, _, t in bars], marker="_", s=2000, color="red", label="target", zorder=3
    )
    kannel = (e2e.get("kannel") or {}).get("delivered_per_s")
    if kannel:
        ax.axhline(kannel, color="#999999", linestyle=":", label=f"Kannel sendsms -> fakesmsc {kannel:.0f}/s")
    ax.set_ylabel("delivered messages / s")
    ax.set_title("End to end, to the platforms' receipt")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, markerscale=0.2)
    return _save(fig, out)


def outage_plot(run: dict[str, Any], out: Path) -> Path | None:
    series: dict[str, list[int]] = run.get("delivered_per_s") or {}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.2))
    start, end = run["fault_window_s"]
    ax.axvspan(start, end, color="#d62728", alpha=0.12, label=f"site a platform {run['fault']}")
    for site, counts in sorted(series.items()):
        ax.plot(range(len(counts)), counts, drawstyle="steps-post", label=f"delivered by site {site}")
    submitted = run.get("submitted_per_s") or []
    ax.plot(
        range(len(submitted)),
        submitted,
        drawstyle="steps-post",
        color="#999999",
        linestyle=":",
        label="accepted",
    )
    verdict = run.get("verdict") or {}
    ax.set_title(
        f"Through a site outage ({run['fault']}): lost {verdict.get('lost')}, "
        f"failover gap {verdict.get('failover_gap_s')} s, recovery {verdict.get('recovery_s')} s"
    )
    ax.set_xlabel("seconds since the first accepted message")
    ax.set_ylabel("messages / s")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, out)


def rss_plot(samples: dict[str, list[list[float]]], out: Path, *, title: str) -> Path | None:
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for name, points in sorted(samples.items()):
        if points:
            ax.plot([p[0] for p in points], [p[1] / MB for p in points], label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, out)


def backlog_plot(backlog: dict[str, Any], out: Path) -> Path | None:
    sizes = backlog.get("sizes") or []
    if not sizes:
        return None
    fig, (rates, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [f"{s['size']:,}" for s in sizes]
    x = range(len(sizes))
    rates.bar([i - 0.2 for i in x], [s.get("publish_per_s", 0) for s in sizes], width=0.4, label="publish /s")
    rates.bar([i + 0.2 for i in x], [s.get("delivery_per_s", 0) for s in sizes], width=0.4, label="drain /s")
    rates.set_xticks(list(x), labels)
    rates.set_xlabel("queued messages")
    rates.set_ylabel("messages / s")
    rates.set_title("Backlog: publish and drain rates")
    rates.legend(fontsize=8)
    for s in sizes:
        points = s.get("worker_rss_samples") or []
        memory.plot([p[0] for p in points], [p[1] / MB for p in points], label=f"{s['size']:,} queued")
    memory.set_xlabel("seconds since the worker started")
    memory.set_ylabel("worker RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.set_title("Worker memory while draining")
    memory.legend(fontsize=8)
    return _save(fig, out)


def kannel_plot(kannel: dict[str, Any], out: Path) -> Path | None:
    """Every round's rate of each side, end to end and accept-only, with the medians' ratios."""
    rounds = kannel.get("rounds_detail") or {}
    shape = kannel.get("relay_shape")
    if not rounds or not shape:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        ("end to end, one message per request", "e2e_single", "kannel_e2e", f"relay_e2e_{shape}"),
        ("accept-only, one message per request", "accept_single", "kannel_accept", "relay_accept"),
    )
    for axis, (title, key, kannel_side, relay_side) in zip(axes, panels, strict=True):
        for offset, (label, side, color) in enumerate(
            (("Kannel", kannel_side, "#999999"), ("relay", relay_side, "#1f77b4"))
        ):
            rates = [r.get("delivered_per_s") or r.get("accepted_per_s") or 0 for r in rounds.get(side, [])]
            axis.bar([n * 3 + offset for n in range(len(rates))], rates, color=color, label=label)
        ratio = ((kannel.get("ratios") or {}).get(key) or {}).get("ratio")
        target = ((kannel.get("ratios") or {}).get(key) or {}).get("target")
        axis.set_title(f"{title}\nmedian ratio {ratio} (target {target})", fontsize=9)
        axis.set_xlabel("rounds (Kannel, relay)")
        axis.set_ylabel("messages / s")
        axis.set_xticks([])
        axis.legend(fontsize=8)
    return _save(fig, out)
