"""`relay up`: the whole relay on one machine, supervised (what `make run` runs).

It migrates the store, starts a simulated platform for every site whose http-json platform or SMSC is on
this machine (see `ops.launcher_sites`), the ingress, and one worker per site (or more), waits until the
ingress is ready, prints how to use it, and then keeps every child running until Ctrl-C or SIGTERM. While
it runs, its run directory holds the run file (`ops.run_dir`) that tells `relay drill` where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from ops.context import EXIT_CHECK_FAILED, EXIT_USAGE, settings
from ops.drill_keys import obtain_key
from ops.drill_traffic import submit_body
from ops.harness.processes import listening
from ops.harness.simulators import simulator_args
from ops.launcher_sites import (
    DEFAULT_ADMIN_PORTS,
    SimulatedSite,
    report_secrets_env,
    simulated_sites,
    with_default_sites,
)
from ops.run_dir import RunFile, remove_run_file, write_run_file
from ops.supervisor import ChildSpec, Supervisor, quiet_http_client_logs, relay_command, run_once
from shared.config_file import config_file_in_use, use_config_file
from shared.errors import TransientError
from shared.logs import get_logger
from shared.settings import Settings

log = get_logger("relay.up")

DEMO_TENANT = "demo"
DEFAULT_RUN_DIR = Path(".run")
MIGRATE_TIMEOUT_S = 120.0
LOOPBACK_CALLBACKS = (("RELAY_CALLBACKS__ALLOW_NETWORKS", '["127.0.0.0/8", "::1/128"]'),)
STOP_MARGIN_S = 5.0  # on top of the workers' own grace time


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDeployment:
    """What `relay up` runs: the settings its children read (from `config_file`), and its simulators."""

    config: Settings
    config_file: Path | None
    simulators: list[SimulatedSite]
    env: tuple[tuple[str, str], ...] = ()  # for the ingress and the workers, over the configuration


def prepare(run_dir: Path, *, with_simulators: bool, reports: bool = True) -> LocalDeployment:
    """The deployment of this invocation's settings; with no site configured, the default sites. With
    `reports`, every simulated site has a report secret, so its simulator's delivery reports come back."""
    config, config_file = settings(), config_file_in_use()
    admin_ports: dict[str, int] = {}
    if not config.sites:
        config_file = with_default_sites(config_file, run_dir, reports=reports and with_simulators)
        use_config_file(config_file)
        settings.cache_clear()
        config, admin_ports = settings(), DEFAULT_ADMIN_PORTS
    simulators = simulated_sites(config, admin_ports=admin_ports) if with_simulators else []
    return LocalDeployment(
        config=config,
        config_file=config_file.resolve() if config_file is not None else None,
        simulators=simulators,
        env=report_secrets_env(config, simulators) if reports else (),
    )


def api_url(config: Settings) -> str:
    host = config.ingress.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{config.ingress.port}"


def plan_children(
    config: Settings,
    *,
    relay: list[str],
    simulators: Sequence[SimulatedSite],
    workers_per_site: int,
    metrics_base_port: int,
    env: tuple[tuple[str, str], ...] = (),
) -> list[ChildSpec]:
    """Every child `relay up` runs, simulators first so the workers find their platforms; `env` goes to
    every relay process (the ingress, the workers, the callback worker)."""
    children = [
        ChildSpec(
            name=f"{sim.command}-{sim.site}",
            args=(
                *simulator_args(
                    [*relay, sim.command], host=sim.host, port=sim.port, admin_port=sim.admin_port
                ),
                *sim.options,
            ),
        )
        for sim in simulators
    ]
    # Everything `relay up` runs is on this machine: callbacks may go to loopback unless the
    # configuration names the networks they may reach.
    with_loopback = env + (() if config.callbacks.allow_networks else LOOPBACK_CALLBACKS)
    children.append(ChildSpec(name="ingress", args=(*relay, "ingress"), env=with_loopback))
    index = 0
    for site in config.site_names:
        for n in range(1, workers_per_site + 1):
            metrics_port = metrics_base_port + index if metrics_base_port else 0
            index += 1
            children.append(
                ChildSpec(
                    name=f"worker-{site}-{n}",
                    args=(*relay, "worker", "--site", site, "--metrics-port", str(metrics_port)),
                    env=env,
                )
            )
    # The callback worker's metrics port follows the workers' (0: none, as theirs).
    metrics_port = metrics_base_port + index if metrics_base_port else 0
    children.append(
        ChildSpec(
            name="callbacks-1",
            args=(*relay, "callbacks", "--metrics-port", str(metrics_port)),
            env=with_loopback,
        )
    )
    return children


def ports_in_use(deployment: LocalDeployment) -> list[int]:
    """Ports `relay up` must listen on that something else already holds."""
    wanted = [deployment.config.ingress.port]
    for sim in deployment.simulators:
        wanted += [sim.port, sim.admin_port]
    return [port for port in wanted if listening("127.0.0.1", port)]


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


@contextlib.asynccontextmanager
async def _stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _ready_key(
    stop: asyncio.Event, *, relay: list[str], url: str, run_dir: Path, ready_timeout_s: float
) -> str | None:
    """The demo key once the ingress is ready; None if stopped first; `TransientError` if it never is."""
    async with httpx.AsyncClient() as client:
        ready = asyncio.create_task(wait_until_ready(client, url=url, timeout_s=ready_timeout_s))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            ready.cancel()
            return None
        stopped.cancel()
        ready.result()
        return await obtain_key(
            relay, tenant=DEMO_TENANT, key_file=run_dir / "demo-key", api_url=url, client=client
        )


async def _up(
    *,
    run_dir: Path,
    with_simulators: bool,
    reports: bool,
    workers_per_site: int,
    metrics_base_port: int,
    ready_timeout_s: float,
) -> int:
    deployment = prepare(run_dir, with_simulators=with_simulators, reports=reports)
    config = deployment.config
    quiet_http_client_logs()
    relay = relay_command(deployment.config_file)
    busy = ports_in_use(deployment)
    if busy:
        typer.echo(f"relay up: ports {busy} are already in use (is another `relay up` running?)", err=True)
        return EXIT_USAGE
    code, output = await run_once([*relay, "db", "upgrade"], timeout_s=MIGRATE_TIMEOUT_S)
    if code != 0:
        typer.echo(f"relay up: `relay db upgrade` failed ({code}):\n{output}", err=True)
        return EXIT_CHECK_FAILED
    supervisor = Supervisor(log_dir=run_dir / "logs", grace_s=config.worker.grace_s + STOP_MARGIN_S)
    url = api_url(config)
    async with _stop_signals() as stop:
        try:
            for spec in plan_children(
                config,
                relay=relay,
                simulators=deployment.simulators,
                workers_per_site=workers_per_site,
                metrics_base_port=metrics_base_port,
                env=deployment.env,
            ):
                await supervisor.start(spec)
            simulators = {sim.site: sim.admin_url for sim in deployment.simulators}
            write_run_file(run_dir, RunFile(config=deployment.config_file, simulators=simulators))
            try:
                key = await _ready_key(
                    stop, relay=relay, url=url, run_dir=run_dir, ready_timeout_s=ready_timeout_s
                )
            except TransientError as exc:
                typer.echo(f"relay up: {exc}; see the logs in {supervisor.log_dir}", err=True)
                return EXIT_CHECK_FAILED
            if key is None:
                return 0
            _print_banner(url=url, key=key, supervisor=supervisor, deployment=deployment, run_dir=run_dir)
            await stop.wait()
            typer.echo("relay up: stopping")
            return 0
        finally:
            remove_run_file(run_dir)
            await supervisor.stop()


def _print_banner(
    *, url: str, key: str, supervisor: Supervisor, deployment: LocalDeployment, run_dir: Path
) -> None:
    pids = ", ".join(f"{name}={pid}" for name, pid in sorted(supervisor.pids().items()))
    lines = [
        "",
        "The relay is up.",
        f"  API:       {url}  (status: {url}/readyz, docs: {url}/docs)",
        f"  Demo key:  {key}",
        f"  Processes: {pids}",
        f"  Logs:      {supervisor.log_dir}/",
    ]
    for sim in deployment.simulators:
        lines.append(f"  Site {sim.site}:    {sim.description}, faults at {sim.admin_url}/faults")
    lines += ["", "Send a message:", f"  {curl_example(url, key)}", ""]
    if deployment.simulators:
        run_dir_option = "" if run_dir == DEFAULT_RUN_DIR else f" --run-dir {shlex.quote(str(run_dir))}"
        lines += [
            "Fail a site's platform and check that nothing is lost:",
            f"  relay drill{run_dir_option}",
            "",
        ]
    lines.append("Ctrl-C stops everything.")
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    """Add `relay up` to the `relay` app."""

    @app.command("up")
    def up(
        no_sims: bool = typer.Option(False, "--no-sims", help="Start no simulated platforms."),
        no_reports: bool = typer.Option(
            False, "--no-reports", help="Give the simulated sites no report secret: no delivery reports."
        ),
        workers_per_site: int = typer.Option(
            1, "--workers-per-site", min=1, max=16, help="Workers per site."
        ),
        metrics_base_port: int = typer.Option(
            9200,
            "--metrics-base-port",
            min=0,
            max=65000,
            help="Metrics port of the first worker; the others and the callback worker follow (0: none).",
        ),
        run_dir: Path = typer.Option(
            DEFAULT_RUN_DIR, "--run-dir", help="Where logs, the demo key and the run file are kept."
        ),
        ready_timeout_s: float = typer.Option(60.0, "--ready-timeout-s", min=1.0, help="Wait for /readyz."),
    ) -> None:
        """Run the relay locally: migrate, simulators, ingress, one worker per site, all supervised.

        With no site configured it runs sites a and b on simulated platforms (ports 9001 and 9002, their
        admin APIs on 9101 and 9102). Each simulated site gets a report secret for the run, so its
        delivery reports make messages `delivered`.
        """
        code = asyncio.run(
            _up(
                run_dir=run_dir,
                with_simulators=not no_sims,
                reports=not no_reports,
                workers_per_site=workers_per_site,
                metrics_base_port=metrics_base_port,
                ready_timeout_s=ready_timeout_s,
            )
        )
        raise typer.Exit(code)
