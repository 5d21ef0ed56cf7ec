"""`relay` operator sub-commands: `relay dead ...` and `relay status`."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import typer

from ops import dead_cli, output
from ops.context import settings
from ops.status import Snapshot, StatusReader, render_plain, render_rich
from shared.errors import BrokerUnavailable, StoreUnavailable, ValidationFailed
from shared.settings import Settings


def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (one per refresh with --watch)."),
    interval_s: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
) -> None:
    """Per site: queue depths, consumers, circuit states, delivery rate; spool backlog; dead letters.

    Exit code 4 when the broker cannot be reached and 5 when the store cannot (after printing what is known).
    """
    if interval_s <= 0:
        raise ValidationFailed([{"field": "--interval", "message": "must be more than zero"}])
    config = settings()
    output.quiet_broker_client_logs()
    with contextlib.suppress(KeyboardInterrupt):
        snap = asyncio.run(_status(config, watch=watch, as_json=as_json, interval_s=interval_s))
        if snap.broker != "ok":
            raise BrokerUnavailable(snap.broker_error or "the broker cannot be reached")
        if snap.store != "ok":
            raise StoreUnavailable(snap.store_error or "the store cannot be reached")


async def _status(config: Settings, *, watch: bool, as_json: bool, interval_s: float) -> Snapshot:
    reader = StatusReader(config=config)
    try:
        await reader.open()
        await reader.warm_up()
        if not watch:
            snap = await reader.snapshot()
            _print(snap, as_json=as_json)
            return snap
        if as_json or not output.is_terminal(sys.stdout):
            while True:  # a pipe gets one snapshot after another; Ctrl-C or a closed pipe ends it
                _print(await reader.snapshot(), as_json=as_json)
                print(flush=True)
                await asyncio.sleep(interval_s)
        from rich.live import Live

        console = output.stdout_console()
        with Live(render_rich(await reader.snapshot()), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval_s)
                live.update(render_rich(await reader.snapshot()), refresh=True)
    finally:
        await reader.close()


def _print(snap: Snapshot, *, as_json: bool) -> None:
    if as_json:
        output.write_lines([output.json_line(snap.to_dict())])
    elif output.is_terminal(sys.stdout):
        output.stdout_console().print(render_rich(snap))
    else:
        output.write_lines([render_plain(snap)])


def register(app: typer.Typer) -> None:
    """Add these commands to the `relay` app."""
    dead_cli.register(app)
    app.command("status")(status)
