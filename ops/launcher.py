"""`relay up`: the whole relay on one machine, supervised (what `make run` runs).

It migrates the store, starts a simulated platform for every site whose platform is local and has a
simulator admin address, the ingress, and one worker per site (or more), waits until the ingress is
ready, prints how to use it, and then keeps every child running until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import typer

from ops.context import EXIT_CHECK_FAILED, EXIT_USAGE, settings
from ops.drill_keys import obtain_key
from ops.drill_traffic import submit_body
from ops.supervisor import ChildSpec, Supervisor, quiet_http_client_logs, relay_command, run_once
from shared.errors import ConfigError, TransientError
from shared.logs import get_logger
from shared.settings import Settings, config_file_in_use

log = get_logger("relay.up")

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEMO_TENANT = "demo"
MIGRATE_TIMEOUT_S = 120.0
STOP_MARGIN_S = 5.0  # on top of the workers' own grace time


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorPorts:
    site: str
    host: str
    port: int
    admin_port: int


def local_simulators(config: Settings) -> list[SimulatorPorts]:
    """Simulators to start: sites whose platform URL is on this machine and that name a sim admin URL."""
    found = []
    for site in config.site_names:
        site_settings = config.sites[site]
        if site_settings.sim_admin_url is None:
            continue
        platform = urlsplit(site_settings.url)
        admin = urlsplit(site_settings.sim_admin_url)
        if platform.hostname not in LOCAL_HOSTS or admin.hostname not in LOCAL_HOSTS:
            continue
        if platform.port is None or admin.port is None:
            raise ConfigError(
                f"sites.{site}: a local simulated platform needs explicit ports in url and sim_admin_url"
            )
        found.append(
            SimulatorPorts(
                site=site, host=platform.hostname or "127.0.0.1", port=platform.port, admin_port=admin.port
            )
        )
    return found


def api_url(config: Settings) -> str:
    host = config.ingress.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{config.ingress.port}"


def plan_children(
    config: Settings,
    *,
    relay: list[str],
    with_simulators: bool,
    workers_per_site: int,
    metrics_base_port: int,
) -> list[ChildSpec]:
    """Every child `relay up` runs, simulators first so the workers find their platforms."""
    children = []
    if with_simulators:
        for sim in local_simulators(config):
            children.append(
                ChildSpec(
                    name=f"platform-sim-{sim.site}",
                    args=(
                        *relay,
                        "platform-sim",
                        "--host",
                        sim.host,
                        "--port",
                        str(sim.port),
                        "--admin-port",
                        str(sim.admin_port),
                    ),
                )
            )
    children.append(ChildSpec(name="ingress", args=(*relay, "ingress")))
    index = 0
    for site in config.site_names:
        for n in range(1, workers_per_site + 1):
            metrics_port = metrics_base_port + index if metrics_base_port else 0
            index += 1
            children.append(
                ChildSpec(
                    name=f"worker-{site}-{n}",
                    args=(*relay, "worker", "--site", site, "--metrics-port", str(metrics_port)),
                )
            )
    return children


def ports_in_use(config: Settings, *, with_simulators: bool) -> list[int]:
    """Ports `relay up` must listen on that something else already holds."""
    wanted = [config.ingress.port]
    if with_simulators:
        for sim in local_simulators(config):
            wanted += [sim.port, sim.admin_port]
    return [port for port in wanted if _listening(port)]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def curl_example(url: str, key: str) -> str:
    body = json.dumps(submit_body(to="+31612345678", sender="DEMO", text="Hello from the relay"))
    return (
        f"curl -sS -X POST {url}/v1/messages -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


async def wait_until_ready(client: httpx.AsyncClient, *, url: str, timeout_s: float) -> dict[str, object]:
    """The ingress's /readyz answer once it says ready; `TransientError` after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = "no answer"
    while asyncio.get_running_loop().time() < deadline:
        try:
            response = await client.get(f"{url}/readyz", timeout=2.0)
            answer = response.json()
            if response.status_code == 200 and answer.get("ready"):
                return dict(answer)
            last = f"{response.status_code} {answer}"
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.25)
    raise TransientError(f"the ingress at {url} was not ready after {timeout_s} s (last: {last})")


async def _up(
    *,
    run_dir: Path,
    with_simulators: bool,
    workers_per_site: int,
    metrics_base_port: int,
    ready_timeout_s: float,
) -> int:
    config = settings()
    quiet_http_client_logs()
    relay = relay_command(config_file_in_use())
    busy = ports_in_use(config, with_simulators=with_simulators)
    if busy:
        typer.echo(f"relay up: ports {busy} are already in use (is another `relay up` running?)", err=True)
        return EXIT_USAGE

    code, output = await run_once([*relay, "db", "upgrade"], timeout_s=MIGRATE_TIMEOUT_S)
    if code != 0:
        typer.echo(f"relay up: `relay db upgrade` failed ({code}):\n{output}", err=True)
        return EXIT_CHECK_FAILED

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    supervisor = Supervisor(log_dir=run_dir / "logs", grace_s=config.worker.grace_s + STOP_MARGIN_S)
    url = api_url(config)
    try:
        for spec in plan_children(
            config,
            relay=relay,
            with_simulators=with_simulators,
            workers_per_site=workers_per_site,
            metrics_base_port=metrics_base_port,
        ):
            await supervisor.start(spec)
        async with httpx.AsyncClient() as client:
            ready = asyncio.create_task(wait_until_ready(client, url=url, timeout_s=ready_timeout_s))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                ready.cancel()
                return 0
            stopped.cancel()
            try:
                ready.result()
                key = await obtain_key(
                    relay, tenant=DEMO_TENANT, key_file=run_dir / "demo-key", api_url=url, client=client
                )
            except TransientError as exc:
                typer.echo(f"relay up: {exc}; see the logs in {supervisor.log_dir}", err=True)
                return EXIT_CHECK_FAILED
        _print_banner(url=url, key=key, supervisor=supervisor)
        await stop.wait()
        typer.echo("relay up: stopping")
        return 0
    finally:
        await supervisor.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _print_banner(*, url: str, key: str, supervisor: Supervisor) -> None:
    pids = ", ".join(f"{name}={pid}" for name, pid in sorted(supervisor.pids().items()))
    typer.echo(
        "\n".join(
            [
                "",
                "The relay is up.",
                f"  API:       {url}  (status: {url}/readyz, docs: {url}/docs)",
                f"  Demo key:  {key}",
                f"  Processes: {pids}",
                f"  Logs:      {supervisor.log_dir}/",
                "",
                "Send a message:",
                f"  {curl_example(url, key)}",
                "",
                "Ctrl-C stops everything.",
            ]
        )
    )


def register(app: typer.Typer) -> None:
    """Add `relay up` to the `relay` app."""

    @app.command("up")
    def up(
        no_sims: bool = typer.Option(False, "--no-sims", help="Start no simulated platforms."),
        workers_per_site: int = typer.Option(
            1, "--workers-per-site", min=1, max=16, help="Workers per site."
        ),
        metrics_base_port: int = typer.Option(
            9200, "--metrics-base-port", min=0, max=65000, help="Metrics port of the first worker (0: none)."
        ),
        run_dir: Path = typer.Option(Path(".run"), "--run-dir", help="Where logs and the demo key are kept."),
        ready_timeout_s: float = typer.Option(60.0, "--ready-timeout-s", min=1.0, help="Wait for /readyz."),
    ) -> None:
        """Run the relay locally: migrate, simulators, ingress, one worker per site, all supervised."""
        code = asyncio.run(
            _up(
                run_dir=run_dir,
                with_simulators=not no_sims,
                workers_per_site=workers_per_site,
                metrics_base_port=metrics_base_port,
                ready_timeout_s=ready_timeout_s,
            )
        )
        raise typer.Exit(code)
