"""`relay spool`: what a spool file holds, and draining one whose ingress replica never comes back.

A replica's spool keeps the submits it answered 202 that its broker had not confirmed yet. While any
replica runs with the file in reach (beside its own, or named in `ingress.peer_spool_paths`) it drains the
file itself once the owner's lock is free. A replica whose machine is gone leaves its file to an operator:
copy it (or mount its disk) wherever the broker can be reached and run `relay spool drain FILE` with the
relay's configuration. Entries go out in order of arrival under their own message ids, those a copy of
which may be queued already marked as possible duplicates, exactly as the replica's own forwarder sends
them; each is deleted from the file only after the broker confirmed it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingress.broker_link import BrokerLink
from ingress.forwarder import drain_file
from ingress.spool import SpoolLock, SpoolSummary, summarize
from ops import output
from ops.context import EXIT_CHECK_FAILED, settings
from ops.store_access import run
from shared.errors import BrokerUnavailable, PermanentError
from shared.topology import topology_from

spool_app = typer.Typer(help="Spool files of ingress replicas: show one, drain an orphaned one.")

PATH_ARGUMENT = typer.Argument(..., metavar="FILE", help="The spool file (an ingress.spool_path).")
JSON_OPTION = typer.Option(False, "--json", help="One JSON object instead of text.")
CONNECT_MARGIN_S = 5.0


def _summary_json(summary: SpoolSummary) -> dict[str, Any]:
    fields = asdict(summary)
    fields["path"] = str(summary.path)
    fields["oldest_age_s"] = round(time.time() - summary.oldest_at, 1) if summary.oldest_at else None
    return fields


@spool_app.command("show")
def show(path: Path = PATH_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """Entries waiting in a spool file, the oldest one's age, and whether a live process owns it."""
    summary = summarize(path)
    lock = SpoolLock.try_acquire(path)
    in_use = lock is None
    if lock is not None:
        lock.release()
    fields = {**_summary_json(summary), "in_use": in_use}
    if as_json:
        typer.echo(json.dumps(fields))
        return
    age = fields["oldest_age_s"]
    rows = [
        ["entries", str(summary.backlog)],
        ["marked possible duplicates", str(summary.marked)],
        ["oldest", f"{age} s ago" if age is not None else "-"],
        ["by site", output.format_counts(summary.by_site)],
        ["owner", "a live process holds its lock" if in_use else "none (orphaned: `relay spool drain`)"],
    ]
    output.print_table(["spool", str(path)], rows)


@spool_app.command("drain")
def drain(path: Path = PATH_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """Forward every entry of an orphaned spool file to the broker in order of arrival, deleting each
    once confirmed. Refuses a file a live process holds. Exit 0 only when the file is empty afterwards."""
    before = summarize(path)
    lock = SpoolLock.try_acquire(path)
    if lock is None:
        raise PermanentError(
            f"{path} is in use: a live ingress process holds its lock ({path.name}.lock) and drains it itself"
        )
    try:
        with _progress(before.backlog) as advance:
            drained = run(_drain(path, advance)) if before.backlog else 0
    finally:
        lock.release()
    after = summarize(path)
    result = {
        "path": str(path),
        "before": before.backlog,
        "marked": before.marked,
        "drained": drained,
        "left": after.backlog,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"{path}: {drained} of {before.backlog} entries forwarded "
            f"({before.marked} marked possible duplicates), {after.backlog} left"
        )
    if after.backlog:
        raise typer.Exit(EXIT_CHECK_FAILED)


async def _drain(path: Path, advance: Callable[[int, int], None]) -> int:
    config = settings()
    output.quiet_client_logs()
    link = BrokerLink(settings=config.broker, topology=topology_from(config), name="relay-spool-drain")
    try:
        await link.start()
        try:
            async with asyncio.timeout(config.broker.connect_timeout_s + CONNECT_MARGIN_S):
                await link.ready.wait()
        except TimeoutError:
            raise BrokerUnavailable("the broker cannot be reached; nothing was forwarded") from None
        return await drain_file(path, link, progress=advance)
    finally:
        await link.close()


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None]]:
    """A Rich progress bar on stderr when it is a terminal; nothing otherwise."""
    bar = Progress(
        TextColumn("draining"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.stderr_console(),
        disable=not output.is_terminal(sys.stderr) or total < 1,
        transient=True,
    )
    task = bar.add_task("drain", total=total)
    with bar:
        yield lambda drained, _left: bar.update(task, completed=drained)


def register(app: typer.Typer) -> None:
    app.add_typer(spool_app, name="spool")
