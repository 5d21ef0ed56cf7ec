"""`relay platform-sim`: run the simulated SMS platform until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal

import typer

from shared.logs import configure_logging
from shared.settings import load_settings
from simulator.server import PlatformSimulator, run_until_stopped


def platform_sim(
    port: int = typer.Option(9001, "--port", min=0, max=65535, help="Port of the http-json platform API."),
    admin_port: int = typer.Option(9101, "--admin-port", min=0, max=65535, help="Port of the admin API."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address both ports listen on."),
    token: str | None = typer.Option(
        None, "--token", help="Product token the platform requires (default: any token is accepted)."
    ),
) -> None:
    """Run a simulated SMS platform (http-json contract) with faults switchable on its admin port."""
    loaded = load_settings()
    configure_logging(level=loaded.log.level, json_output=loaded.log.json_output)
    serve = _serve(host=host, port=port, admin_port=admin_port, token=token)
    try:
        import uvloop
    except ImportError:  # optional: the standard loop works, more slowly
        asyncio.run(serve)
        return
    uvloop.run(serve)


async def _serve(*, host: str, port: int, admin_port: int, token: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    simulator = PlatformSimulator(host=host, port=port, admin_port=admin_port, token=token)
    await run_until_stopped(simulator, stop)
