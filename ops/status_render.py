"""`relay status`'s snapshot as text: plain lines for a pipe or a file, Rich tables for a terminal."""

from __future__ import annotations

from typing import Any

from ops.status_cluster import cluster_lines, cluster_rich
from ops.status_model import UNKNOWN, SiteView, Snapshot


def _num(value: int | float | str | None) -> str:
    return "?" if value is None else str(value)


def _rate(site: SiteView) -> str:
    if site.delivered_per_s is None:
        return "-"
    return f"{site.delivered_per_s:g}/s ({site.rate_source})"


def _delays(site: SiteView) -> str:
    return " ".join(f"{tier}:{_num(n)}" for tier, n in site.delay_queues.items())


def _headline(snap: Snapshot) -> str:
    ingress = snap.ingress
    if ingress.get("reachable"):
        ingress_text = "ready" if ingress.get("ready") else "NOT READY"
    else:
        ingress_text = "unreachable"
    return (
        f"broker {snap.broker}  store {snap.store}  ingress {ingress_text}  "
        f"spool backlog {ingress.get('spool_backlog', UNKNOWN)}  (prefix {snap.prefix}, {snap.at})"
    )


def _reports_text(snap: Snapshot) -> str:
    return f"delivery reports unmatched {snap.reports_unmatched}"


def _dead_text(snap: Snapshot) -> str:
    by_reason = snap.dead_letters.get("by_reason") or {}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items()))
    return f"dead letters {snap.dead_letters.get('total')}" + (f" ({detail})" if detail else "")


def render_plain(snap: Snapshot) -> str:
    lines = [_headline(snap)]
    for error in (snap.broker_error, snap.store_error):
        if error:
            lines.append(f"  ! {error}")
    for site in snap.sites:
        lines.append(
            f"site {site.name}: queue {site.queue} ready {_num(site.ready)} unacked {site.unacked} "
            f"consumers {_num(site.consumers)} delay {_delays(site)} circuit {site.circuit} "
            f"workers {len(site.workers)} sent {_rate(site)}"
        )
        for worker in site.workers:
            lines.append(
                f"  worker {worker.worker} circuit {worker.circuit} in-flight {worker.in_flight}/"
                f"{worker.concurrency} sent {worker.delivered_total} "
                f"failed-over {worker.failed_over_total} seen {worker.age_s}s ago"
            )
    lines.extend(cluster_lines(snap.cluster))
    lines.append(_reports_text(snap))
    lines.append(_dead_text(snap))
    return "\n".join(lines)


def render_rich(snap: Snapshot) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="sites", expand=False)
    for name in ("site", "ready", "unacked", "consumers", "delay queues", "circuit", "workers", "sent"):
        table.add_column(name, justify="right" if name in ("ready", "unacked", "consumers") else "left")
    for site in snap.sites:
        circuit_style = "green" if site.circuit == "closed" else "red"
        table.add_row(
            site.name,
            _num(site.ready),
            str(site.unacked),
            _num(site.consumers),
            _delays(site),
            Text(site.circuit, style=circuit_style),
            str(len(site.workers)),
            _rate(site),
        )
    parts: list[Any] = [Text(_headline(snap), style="bold")]
    for error in (snap.broker_error, snap.store_error):
        if error:
            parts.append(Text(error, style="red"))
    parts.append(table)
    parts.extend(cluster_rich(snap.cluster))
    parts.append(Text(_reports_text(snap)))
    parts.append(Text(_dead_text(snap)))
    return Group(*parts)
