"""`relay smsc-sim`: run the simulated SMPP SMSC until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal

import typer

from shared.logs import configure_logging
from shared.settings import load_settings
from simulator.smsc.server import SmscSimulator, run_until_stopped


def smsc_sim(
    port: int = typer.Option(2775, "--port", min=0, max=65535, help="SMPP port."),
    admin_port: int = typer.Option(9201, "--admin-port", min=0, max=65535, help="Port of the admin API."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address both ports listen on."),
    system_id: str | None = typer.Option(
        None, "--system-id", help="system_id a bind must give (default: any is accepted)."
    ),
    password: str | None = typer.Option(
        None, "--password", help="Password a bind must give (default: any is accepted)."
    ),
) -> None:
    """Run a simulated SMPP 3.4 SMSC with faults switchable on its admin port."""
    loaded = load_settings()
    configure_logging(level=loaded.log.level, json_output=loaded.log.json_output)
    asyncio.run(_serve(host=host, port=port, admin_port=admin_port, system_id=system_id, password=password))


async def _serve(
    *, host: str, port: int, admin_port: int, system_id: str | None, password: str | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = SmscSimulator(
        host=host, port=port, admin_port=admin_port, username=system_id, password=password
    )
    await run_until_stopped(simulator, stop)
