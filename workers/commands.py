"""`relay` sub-commands of the workers package."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import typer

from shared.cli import settings
from shared.errors import ConfigError
from workers.platforms import make_platform
from workers.runtime import Worker
from workers.simulator.cli import register as register_platform_sim


def register(app: typer.Typer) -> None:
    """Add the worker commands to the `relay` app."""
    app.command("worker")(worker)
    register_platform_sim(app)


def worker(
    site: str = typer.Option(..., "--site", help="The site whose platform this worker delivers to."),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        max=4096,
        help="Platform requests at once (default: worker.concurrency).",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Prometheus port, 0 for none (default: worker.metrics_port).",
    ),
) -> None:
    """Run one worker of a site's pool until SIGTERM; it also stands by for the other sites' queues."""
    loaded = settings()
    if site not in loaded.sites:
        raise ConfigError(f"unknown site {site!r}: configured sites are {', '.join(loaded.site_names)}")
    size = concurrency or loaded.worker.concurrency
    port = loaded.worker.metrics_port if metrics_port is None else metrics_port
    _run(_serve(site=site, concurrency=size, metrics_port=port))
    # Everything the worker held is settled or handed back, and nothing of it lives in this process.
    # Interpreter teardown of this module graph takes seconds on a busy machine, seconds that count
    # against the grace period an orchestrator gives a SIGTERM, so skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _serve(*, site: str, concurrency: int, metrics_port: int) -> None:
    loaded = settings()
    platform = make_platform(loaded.sites[site], concurrency=concurrency)
    runtime = Worker(
        settings=loaded, site=site, platform=platform, concurrency=concurrency, metrics_port=metrics_port
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.request_stop)
    await runtime.run()


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional; the standard loop works, more slowly
        asyncio.run(main)  # type: ignore[arg-type]
        return
    uvloop.run(main)  # type: ignore[arg-type]
