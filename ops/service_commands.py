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
from sqlalchemy.engine import make_url

from ops import output, spool_cli
from ops.context import check_site, settings
from ops.store_access import open_store, run
from shared.config_file import sqlite_file
from shared.reports import report_urls
from shared.store.accounts import ensure_account_sid
from shared.store.api_keys import KeyInfo, create_key, list_keys, revoke_key
from shared.store.callbacks import signing_secret
from shared.store.migrate import upgrade
from simulator.cli import platform_sim
from simulator.smsc.cli import smsc_sim
from workers.platforms import make_platform
from workers.runtime import Worker

T = TypeVar("T")

db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the HTTP API (only their sha256 is stored).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", metavar="REVISION", help="Alembic revision to upgrade to."),
) -> None:
    """Create the store or bring its schema up to date (the only way the schema is made)."""
    store = settings().store
    path = sqlite_file(store.url)
    if path is not None:
        path = path.absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(store, revision)
    # Where the store is, for an operator: the SQLite file, or the URL without its password.
    where = str(path) if path is not None else make_url(store.url).render_as_string(hide_password=True)
    typer.echo(f"store {where} at revision {revision}")


def _with_store(action: Callable[[Any], Awaitable[T]]) -> T:
    async def with_sessions() -> T:
        async with open_store(settings().store) as sessions:
            return await action(sessions)

    return run(with_sessions())


def _key_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "tenant": info.tenant,
        "prefix": info.prefix,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        "revoked": info.revoked,
    }


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", metavar="TENANT", help="Tenant the key sends for."),
) -> None:
    """Create a key; it is shown once, as the last line (only its hash is stored). The first line names
    the tenant's account SID, the user name for the Twilio-style API."""

    async def create(sessions: Any) -> tuple[str, KeyInfo, str]:
        key, info = await create_key(sessions, tenant=tenant)
        return key, info, await ensure_account_sid(sessions, tenant=info.tenant)

    key, info, sid = _with_store(create)
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
    rows = [
        [info.tenant, info.prefix, output.short_time(info.created_at), output.short_time(info.revoked_at)]
        for info in infos
    ]
    output.print_table(["tenant", "prefix", "created (UTC)", "revoked (UTC)"], rows)


@keys_app.command("revoke")
def keys_revoke(
    key_or_prefix: str = typer.Argument(..., metavar="KEY", help="The whole key, or its prefix."),
) -> None:
    """Revoke a key (the ingress stops taking it within seconds)."""
    info = _with_store(lambda sessions: revoke_key(sessions, key_or_prefix))
    typer.echo(f"revoked {info.prefix}... of tenant {info.tenant}")


@keys_app.command("secret")
def keys_secret(
    tenant: str = typer.Option(..., "--tenant", metavar="TENANT", help="Tenant whose callbacks it signs."),
    rotate: bool = typer.Option(
        False,
        "--rotate",
        help="Replace it; the old one keeps signing beside it for callbacks.secret_overlap_s.",
    ),
) -> None:
    """The tenant's callback signing secret, as the last line (made the first time it is asked for)."""
    overlap_s = settings().callbacks.secret_overlap_s

    async def secret(sessions: Any) -> str:
        async with sessions.begin() as session:
            return await signing_secret(session, tenant=tenant, rotate=rotate, overlap_s=overlap_s)

    value = _with_store(secret)
    if rotate:
        typer.echo(f"rotated; the previous secret signs beside this one for {overlap_s} s")
    typer.echo(value)


def _metrics_port_option(setting: str) -> Any:
    return typer.Option(
        None,
        "--metrics-port",
        metavar="PORT",
        min=0,
        max=65535,
        help=f"Prometheus port, 0 for none (default: {setting}).",
    )


def callbacks_command(
    metrics_port: int | None = _metrics_port_option("callbacks.metrics_port"),
) -> None:
    """Run a callback worker until SIGTERM: POST each status change to its customer's endpoint, signed."""
    from workers.callbacks.runtime import CallbackWorker

    loaded = settings()
    port = loaded.callbacks.metrics_port if metrics_port is None else metrics_port

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = await CallbackWorker.start(settings=loaded, stop=stop, metrics_port=port)
        await worker.run()

    _run(serve())


def ingress_command(
    host: str | None = typer.Option(
        None, "--host", metavar="ADDRESS", help="Listen address (default: ingress.host)."
    ),
    port: int | None = typer.Option(
        None, "--port", metavar="PORT", help="Listen port (default: ingress.port)."
    ),
    processes: int | None = typer.Option(
        None, "--processes", metavar="N", help="Processes (default: ingress.processes)."
    ),
) -> None:
    """Serve the HTTP API (submit, status, health, metrics) with its spool forwarder and recorder."""
    from ingress.server import serve

    loaded = settings()
    overrides = {
        k: v for k, v in {"host": host, "port": port, "processes": processes}.items() if v is not None
    }
    if overrides:
        loaded = loaded.model_copy(update={"ingress": loaded.ingress.model_copy(update=overrides)})
    # The default spool lies in the data directory, which a fresh machine does not have yet.
    loaded.ingress.spool_path.absolute().parent.mkdir(parents=True, exist_ok=True)
    serve(loaded)


def worker(
    site: str = typer.Option(
        ..., "--site", metavar="SITE", help="The site whose platform this worker delivers to."
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        metavar="N",
        min=1,
        max=4096,
        help="Platform requests at once (default: worker.concurrency).",
    ),
    metrics_port: int | None = _metrics_port_option("worker.metrics_port"),
) -> None:
    """Run one worker of a site's pool until SIGTERM; it also stands by for the other sites' queues."""
    loaded = settings()
    check_site(loaded, site)
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
    platform = make_platform(loaded.sites[site], concurrency=concurrency, reports=report_urls(loaded, site))
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
    app.command("callbacks")(callbacks_command)
    app.command("platform-sim")(platform_sim)
    app.command("smsc-sim")(smsc_sim)
    spool_cli.register(app)
