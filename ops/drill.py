"""`relay drill`: a bounded failover drill against a live deployment, with a verdict and an exit code.

It sends a bounded stream of test messages through the HTTP API, injects a fault at one site a third of
the way through, clears it two thirds through, waits until every accepted message has arrived somewhere
(or a bound passes), and judges: nothing lost, how many duplicates, how long the failover took. The run
itself is `ops.drill_run`; this module is the command.

It finds the deployment through the run file of `relay up` in `--run-dir`: the configuration its
processes read (unless `--config` names one) and the admin URL of each site's simulated platform (unless
`--simulator` names them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import typer
from rich.console import Console

from ops.context import EXIT_USAGE, settings
from ops.drill_plan import DEFAULT_FAULT, FAULTS, DrillPlan, DrillRefused, DrillTarget
from ops.drill_render import render
from ops.drill_run import Drill
from ops.harness.simulators import SimulatorUnavailable
from ops.run_dir import read_run_file
from ops.supervisor import quiet_http_client_logs, relay_command
from shared.config_file import config_file_in_use, use_config_file
from shared.errors import ConfigError


def parse_simulators(options: list[str]) -> dict[str, str]:
    """`--simulator SITE=URL` options as site -> admin URL."""
    simulators = {}
    for option in options:
        site, sep, url = option.partition("=")
        if not sep or not site or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--simulator {option!r}: give SITE=http://HOST:PORT (its admin API)")
        simulators[site] = url
    return simulators


def load_target(run_dir: Path, simulator_options: list[str]) -> DrillTarget:
    """The deployment to drill: `--config` (else the one the run file names) and the simulators named by
    `--simulator` (else by the run file)."""
    run = read_run_file(run_dir)
    if config_file_in_use() is None and run is not None and run.config is not None:
        use_config_file(run.config)
        settings.cache_clear()
    config = settings()
    simulators = parse_simulators(simulator_options) if simulator_options else {}
    if not simulator_options and run is not None:
        simulators = run.simulators
    unknown = sorted(set(simulators) - set(config.sites))
    if unknown:
        raise ConfigError(f"--simulator names sites that are not configured: {', '.join(unknown)}")
    return DrillTarget(config=config, relay=relay_command(config_file_in_use()), simulators=simulators)


async def _drill(plan: DrillPlan, target: DrillTarget, *, as_json: bool) -> int:
    quiet_http_client_logs()
    console = Console(stderr=as_json, log_path=False)
    say: Callable[[str], None] = (lambda _: None) if as_json else console.log
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=128)) as client:
        drill = Drill(target=target, plan=plan, client=client, say=say)
        try:
            verdict = await drill.run()
        except (DrillRefused, SimulatorUnavailable) as exc:
            if as_json:
                typer.echo(json.dumps({"refused": str(exc)}))
            Console(stderr=True).print(f"relay drill: {exc}")
            return EXIT_USAGE
    if as_json:
        run = {"messages": plan.messages, **drill.pace.as_dict(), "fault_notes": drill.fault_notes}
        typer.echo(json.dumps(verdict.as_dict() | {"run": run}))
    else:
        render(verdict, console, pace=drill.pace)
    return verdict.exit_code


def register(app: typer.Typer) -> None:
    """Add `relay drill` to the `relay` app."""

    @app.command("drill")
    def drill(
        site: str = typer.Option("a", "--site", help="Site to inject the fault at."),
        fault: str = typer.Option(DEFAULT_FAULT, "--fault", help=" | ".join(FAULTS)),
        messages: int = typer.Option(2000, "--messages", min=3, max=100_000, help="Test messages to send."),
        rate: float = typer.Option(100.0, "--rate", min=1.0, max=10_000.0, help="Messages per second."),
        settle_timeout_s: float = typer.Option(
            120.0,
            "--settle-timeout-s",
            min=1.0,
            help="Longest wait for every message to arrive after sending.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
        allow_real_platforms: bool = typer.Option(
            False, "--allow-real-platforms", help="Run even if some site's platform is not a simulator."
        ),
        run_dir: Path = typer.Option(
            Path(".run"),
            "--run-dir",
            help="Run directory of the `relay up` to drill (its run file names the configuration and the "
            "simulators); the drill keeps its API key there.",
        ),
        simulators: list[str] = typer.Option(
            [],
            "--simulator",
            metavar="SITE=URL",
            help="Admin URL of a site's simulated platform, once per site (instead of the run file's).",
        ),
    ) -> None:
        """Failover drill: traffic, a fault at one site, a verdict. Exit 0 only if nothing was lost.

        Faults: down (refused connections, the default), blackhole (no answer), error (500s, or binds
        refused by a simulated SMSC: nothing taken), kill-worker (SIGKILLs the site's workers on this
        host; `relay up` restarts them), broker-node (SIGKILLs the broker node on this host that leads the
        site's queue, found through broker.management_url, and starts it again; needs a cluster).

        The fault begins after a third of the messages and ends after two thirds; the last third follows.

        Failover gap: the longest hold-up of a message by the fault, acceptance to first receipt anywhere.

        The rate sent at is reported, and said clearly when it falls short of --rate. Receipts are polled
        every 0.1 s. Exit 1: messages were lost; exit 2: the drill refused to run.
        """
        if fault not in FAULTS:
            typer.echo(f"relay drill: --fault must be one of {', '.join(FAULTS)}", err=True)
            raise typer.Exit(EXIT_USAGE)
        plan = DrillPlan(
            site=site,
            fault=fault,
            messages=messages,
            rate_per_s=rate,
            settle_timeout_s=settle_timeout_s,
            allow_real_platforms=allow_real_platforms,
            run_dir=run_dir,
        )
        raise typer.Exit(asyncio.run(_drill(plan, load_target(run_dir, simulators), as_json=as_json)))
