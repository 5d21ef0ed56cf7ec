"""`relay` sub-commands that run or prepare the services: db, keys, ingress, worker and the simulators."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError, ProgrammingError

from ops.context import settings
from shared.errors import ConfigError, StoreUnavailable
from shared.store.accounts import ensure_account_sid
from shared.store.api_keys import KeyInfo, create_key, list_keys, revoke_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade
from simulator.cli import platform_sim
from simulator.smsc.cli import smsc_sim
from workers.platforms import make_platform
from workers.runtime import Worker

T = TypeVar("T")

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the HTTP API (only their sha256 is stored).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Run the Alembic migrations (the only way the schema is made)."""
    upgrade(settings().store, revision)
    typer.echo(f"store at revision {revision}")


def _with_store(action: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = make_engine(settings().store)
        try:
            return await action(make_sessionmaker(engine))
        except (OperationalError, ProgrammingError) as exc:
            raise StoreUnavailable(
                f"the store cannot be used ({exc.orig!r}); is it reachable and upgraded (relay db upgrade)?"
            ) from None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _key_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "tenant": info.tenant,
        "prefix": info.prefix,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "revoked": info.revoked,
    }


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(..., "--tenant", help="Tenant the key sends for.")) -> None:
    """Create a key; it is shown once, as the last line (only its hash is stored). The first line names
    the tenant's account SID, the user name for the Twilio-style API."""
    key, info = _with_store(lambda sessions: create_key(sessions, tenant=tenant))
    sid = _with_store(lambda sessions: ensure_account_sid(sessions, tenant=info.tenant))
    typer.echo(f"account SID: {sid}")
    typer.echo(f"created API key {info.prefix}... for tenant {info.tenant}; it is shown only now:", err=False)
    typer.echo(key)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """Every key: tenant, prefix, created, revoked."""
    infos = _with_store(list_keys)
    if as_json:
        typer.echo(json.dumps([_key_json(i) for i in infos], indent=2))
        return
    table = Table(title="API keys")
    for column in ("tenant", "prefix", "created", "revoked"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info.tenant,
            info.prefix,
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            info.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if info.revoked_at else "-",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_or_prefix: str = typer.Argument(..., help="The whole key, or its prefix.")) -> None:
    """Revoke a key (the ingress stops taking it within seconds)."""
    info = _with_store(lambda sessions: revoke_key(sessions, key_or_prefix))
    typer.echo(f"revoked {info.prefix}... of tenant {info.tenant}")


def ingress_command(
    host: str | None = typer.Option(None, "--host", help="Listen address (default: ingress.host)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (default: ingress.port)."),
    processes: int | None = typer.Option(None, "--processes", help="Processes (default: ingress.processes)."),
) -> None:
    """Serve the HTTP API (submit, status, health, metrics) with its spool forwarder and recorder."""
    from ingress.server import serve

    loaded = settings()
    overrides = {
        k: v for k, v in {"host": host, "port": port, "processes": processes}.items() if v is not None
    }
    if overrides:
        loaded = loaded.model_copy(update={"ingress": loaded.ingress.model_copy(update=overrides)})
    serve(loaded)


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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runtime = await Worker.start(
        settings=loaded,
        site=site,
        platform=platform,
        concurrency=concurrency,
        metrics_port=metrics_port,
        stop=stop,
    )
    await runtime.run()


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional; the standard loop works, more slowly
        asyncio.run(main)  # type: ignore[arg-type]
        return
    uvloop.run(main)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    """Add the service commands to the `relay` app."""
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")
    app.command("ingress")(ingress_command)
    app.command("worker")(worker)
    app.command("platform-sim")(platform_sim)
    app.command("smsc-sim")(smsc_sim)
