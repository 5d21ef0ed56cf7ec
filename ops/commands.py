"""`relay` operator sub-commands: `relay dead ...` and `relay status`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import typer

from ops import dead_cli, output
from ops.context import settings
from ops.status import StatusReader
from ops.status_model import Snapshot
from ops.status_render import render_plain, render_rich
from shared.errors import BrokerUnavailable, StoreUnavailable, ValidationFailed
from shared.settings import Settings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C (or SIGTERM)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (one per refresh with --watch)."),
    interval_s: float = typer.Option(
        2.0, "--interval", metavar="SECONDS", help="Seconds between refreshes with --watch."
    ),
) -> None:
    """Per site: queue depths, consumers, circuit states, delivery rate; spool backlog; dead letters.

    Exit code 4 when the broker cannot be reached and 5 when the store cannot (after printing what is known).
    With --watch, Ctrl-C or SIGTERM ends it with exit code 0.
    """
    if interval_s <= 0:
        raise ValidationFailed([{"field": "--interval", "message": "must be more than zero"}])
    config = settings()
    output.quiet_client_logs()
    if watch:
        asyncio.run(until_stopped(partial(_watch, config, as_json=as_json, interval_s=interval_s)))
        return
    snap = asyncio.run(_once(config, as_json=as_json))
    if snap.broker != "ok":
        raise BrokerUnavailable(snap.broker_error or "the broker cannot be reached")
    if snap.store != "ok":
        raise StoreUnavailable(snap.store_error or "the store cannot be reached")


async def until_stopped(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `work(stop)` until it ends; SIGINT or SIGTERM sets `stop`, a second one cancels the work.

    The handlers are the loop's own, so a watch started with SIGINT ignored (a background job of a script)
    still stops on it. The work finishes what it is doing and returns rather than being cancelled at once:
    cancelling a broker connection attempt half-way leaves the client reconnecting for ever.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.ensure_future(work(stop))

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()  # asked twice: do not wait any longer
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # cancelled from outside, not by a second signal
            raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def paused(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `stop` is set; True when it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _once(config: Settings, *, as_json: bool) -> Snapshot:
    reader = StatusReader(config=config)
    try:
        await reader.open()
        await asyncio.sleep(reader.warm_up_s)
        snap = await reader.snapshot()
        _print(snap, as_json=as_json)
        return snap
    finally:
        await reader.close()


async def _watch(config: Settings, stop: asyncio.Event, *, as_json: bool, interval_s: float) -> None:
    reader = StatusReader(config=config)
    try:
        await reader.open()
        if await paused(stop, reader.warm_up_s):
            return
        if as_json or not output.is_terminal_out():
            # A pipe gets one snapshot after another, until a signal or a closed pipe.
            while True:
                _print(await reader.snapshot(), as_json=as_json)
                output.write_lines([""])
                if sys.stdout is None or await paused(stop, interval_s):  # `None`: the reader went away
                    return
        from rich.live import Live

        with Live(
            render_rich(await reader.snapshot()), console=output.stdout_console(), auto_refresh=False
        ) as live:
            while not await paused(stop, interval_s):
                live.update(render_rich(await reader.snapshot()), refresh=True)
    finally:
        await reader.close()


def _print(snap: Snapshot, *, as_json: bool) -> None:
    if as_json:
        output.write_lines([output.json_line(snap.to_dict())])
    elif output.is_terminal_out():
        output.stdout_console().print(render_rich(snap))
    else:
        output.write_lines([render_plain(snap)])


def register(app: typer.Typer) -> None:
    """Add these commands to the `relay` app."""
    dead_cli.register(app)
    app.command("status")(status)
