"""A drill's verdict as a table on the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ops.drill_plan import Pace
from ops.drill_verdict import Verdict


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(verdict: Verdict, console: Console, *, pace: Pace | None = None) -> None:
    table = Table(title=f"Drill: {verdict.fault} at site {verdict.fault_site}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    if pace is not None:
        rate = f"{pace.sent_per_s:.0f}/s of {pace.asked_per_s:g}/s asked"
        table.add_row("send rate", f"[bold yellow]{rate}[/]" if pace.short else rate)
    table.add_row("accepted", str(verdict.accepted))
    for site, count in verdict.delivered_per_site.items():
        table.add_row(f"delivered by site {site}", str(count))
    table.add_row("delivered (unique)", str(verdict.delivered))
    for status, count in sorted(verdict.dead_lettered.items()):
        table.add_row(f"settled as {status}", str(count))
    lost_style = "bold green" if verdict.lost == 0 else "bold red"
    table.add_row("lost", f"[{lost_style}]{verdict.lost}[/]")
    if verdict.unsettled:
        table.add_row("  of which still pending", str(verdict.unsettled))
    table.add_row("duplicates", str(verdict.duplicates))
    table.add_row(
        "ambiguous or marked attempts",
        "-" if verdict.ambiguous_attempts is None else str(verdict.ambiguous_attempts),
    )
    if verdict.refused:
        table.add_row("refused at submit", ", ".join(f"{k}: {v}" for k, v in verdict.refused.items()))
    table.add_row("fault duration", _fmt_s(verdict.fault_duration_s))
    table.add_row("failover gap (longest hold-up)", _fmt_s(verdict.failover_gap_s))
    table.add_row("longest silence, all sites", _fmt_s(verdict.silence_gap_s))
    table.add_row("first receipt at another site", _fmt_s(verdict.first_other_site_s))
    table.add_row("recovery of the faulted site", _fmt_s(verdict.recovery_s))
    console.print(table)
    if verdict.lost_ids:
        console.print(f"lost ids (first {len(verdict.lost_ids)}): {' '.join(verdict.lost_ids)}")
    if pace is not None and pace.short:
        console.print(f"[bold yellow]note[/]: {pace.describe()}", soft_wrap=True)
    console.print(
        "[bold green]PASSED[/]: nothing lost" if verdict.passed else "[bold red]FAILED[/]: messages lost"
    )
