"""`relay drill`: a bounded failover drill against a live deployment, with a verdict and an exit code.

It sends a bounded stream of test messages through the HTTP API, injects a fault at one site a third of
the way through, clears it two thirds through, waits until every accepted message has arrived somewhere
(or a bound passes), and judges: nothing lost, how many duplicates, how long the failover took. It resets
nothing: it counts only its own message ids in what the simulated platforms received. See
`ops.drill_verdict` for the exact definitions of each figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from ops.context import EXIT_USAGE, settings
from ops.drill_heartbeats import HeartbeatWatcher
from ops.drill_keys import obtain_key
from ops.drill_sims import ReceiptTracker, SimStats, SimulatorAdmin, SimulatorUnavailable
from ops.drill_traffic import Traffic, TrafficResult
from ops.drill_verdict import Observation, Verdict, compute
from ops.launcher import api_url
from ops.supervisor import quiet_http_client_logs, relay_command
from shared.errors import TransientError
from shared.settings import Settings, config_file_in_use

FAULTS = ("down", "blackhole", "error", "kill-worker")
DRILL_TENANT = "drill"
QUIET_S = 3.0  # no new receipt for this long: ask the store about the ids still missing
STATUS_CONCURRENCY = 16
RESTART_TIMEOUT_S = 60.0


class DrillRefused(Exception):
    """The drill will not run (unsafe target, bad arguments, deployment not reachable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillPlan:
    site: str
    fault: str
    messages: int
    rate_per_s: float
    settle_timeout_s: float
    allow_real_platforms: bool
    run_dir: Path


async def probe_simulators(
    config: Settings, client: httpx.AsyncClient
) -> tuple[dict[str, SimulatorAdmin], list[str]]:
    """The sites whose platform answers like the simulator, and why each other site does not."""
    sims: dict[str, SimulatorAdmin] = {}
    problems: list[str] = []
    for site in config.site_names:
        admin_url = config.sites[site].sim_admin_url
        if admin_url is None:
            problems.append(f"site {site} has no sim_admin_url: its platform may be real")
            continue
        sim = SimulatorAdmin(client=client, site=site, admin_url=admin_url)
        try:
            await sim.stats()
        except SimulatorUnavailable as exc:
            problems.append(str(exc))
            continue
        sims[site] = sim
    return sims, problems


async def fetch_message(
    client: httpx.AsyncClient, *, url: str, key: str, message_id: str
) -> dict[str, Any] | None:
    try:
        response = await client.get(
            f"{url}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10.0
        )
        answer = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return answer if response.status_code == 200 and isinstance(answer, dict) else None


def ambiguous_in(message: dict[str, Any]) -> int:
    """Ambiguous attempts in one message's status answer: its attempt history, else its counter."""
    history = message.get("history")
    if isinstance(history, list):
        return sum(1 for a in history if isinstance(a, dict) and a.get("outcome") == "ambiguous")
    counter = message.get("possible_duplicates")
    return counter if isinstance(counter, int) else 0


async def fetch_all(
    client: httpx.AsyncClient, *, url: str, key: str, ids: list[str]
) -> dict[str, dict[str, Any] | None]:
    slots = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def one(message_id: str) -> tuple[str, dict[str, Any] | None]:
        async with slots:
            return message_id, await fetch_message(client, url=url, key=key, message_id=message_id)

    return dict(await asyncio.gather(*(one(m) for m in ids)))


class Drill:
    """One run: traffic, fault, observation. `run()` returns the verdict."""

    def __init__(
        self, *, config: Settings, plan: DrillPlan, client: httpx.AsyncClient, say: Callable[[str], None]
    ):
        self._config = config
        self._plan = plan
        self._client = client
        self._say = say
        self._url = api_url(config)
        self._run_id = uuid.uuid4().hex[:8]
        self._statuses: dict[str, str] = {}
        self._killed: frozenset[int] = frozenset()
        self.observation: Observation | None = None  # what the last run saw, for benchmarks' plots
        self.send_rate_per_s = 0.0

    async def _check_ready(self) -> None:
        try:
            response = await self._client.get(f"{self._url}/readyz", timeout=5.0)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DrillRefused(f"the ingress at {self._url} does not answer: {exc!r}") from None
        if response.status_code != 200 or not answer.get("ready"):
            raise DrillRefused(f"the ingress at {self._url} is not ready: {answer}")

    async def run(self) -> Verdict:
        plan = self._plan
        if plan.site not in self._config.sites:
            raise DrillRefused(f"unknown site {plan.site!r}; sites: {', '.join(self._config.site_names)}")
        if plan.fault not in FAULTS:
            raise DrillRefused(f"unknown fault {plan.fault!r}; faults: {', '.join(FAULTS)}")
        sims, problems = await probe_simulators(self._config, self._client)
        if problems and not plan.allow_real_platforms:
            raise DrillRefused(
                "refusing to drill against platforms that are not simulators (--allow-real-platforms "
                "overrides): " + "; ".join(problems)
            )
        if plan.fault != "kill-worker" and plan.site not in sims:
            raise DrillRefused(f"fault {plan.fault!r} needs the simulated platform of site {plan.site!r}")
        await self._check_ready()
        try:
            key = await obtain_key(
                relay_command(config_file_in_use()),
                tenant=DRILL_TENANT,
                key_file=plan.run_dir / "drill-key",
                api_url=self._url,
                client=self._client,
            )
        except TransientError as exc:
            raise DrillRefused(str(exc)) from None

        async with contextlib.AsyncExitStack() as stack:
            # Heartbeats tell when the faulted site consumes again, so the last third of the traffic is
            # sent only then and the site's recovery is observed under traffic.
            watcher = await stack.enter_async_context(HeartbeatWatcher(broker=self._config.broker))
            if plan.fault == "kill-worker":
                try:
                    await watcher.wait_for(
                        plan.site, timeout_s=3 * self._config.worker.heartbeat_interval_s + 2
                    )
                except TimeoutError:
                    raise DrillRefused(
                        f"no worker of site {plan.site!r} on this host sends heartbeats"
                    ) from None
            return await self._observe(key=key, sims=sims, watcher=watcher, unobserved_sites=bool(problems))

    async def _observe(
        self,
        *,
        key: str,
        sims: dict[str, SimulatorAdmin],
        watcher: HeartbeatWatcher,
        unobserved_sites: bool,
    ) -> Verdict:
        plan = self._plan
        tracker = ReceiptTracker(sims=list(sims.values()))
        await tracker.baseline()
        stats_before = {site: await sim.stats() for site, sim in sims.items()}
        traffic = Traffic(
            client=self._client,
            api_url=self._url,
            key=key,
            run_id=self._run_id,
            count=plan.messages,
            rate_per_s=plan.rate_per_s,
        )
        self._say(
            f"drill {self._run_id}: {plan.messages} messages at {plan.rate_per_s:g}/s, "
            f"fault {plan.fault!r} at site {plan.site} from message {plan.messages // 3} "
            f"to message {2 * plan.messages // 3}"
        )
        third = asyncio.Event()
        two_thirds = asyncio.Event()

        def progress(sent: int) -> None:
            # The fault follows the traffic, not the clock, so it covers the middle third of the
            # messages even when the ingress answers more slowly than the asked rate.
            if sent >= plan.messages // 3:
                third.set()
            if sent >= 2 * plan.messages // 3:
                two_thirds.set()

        tracker.start()
        sending_started = time.time()
        cleared = asyncio.Event()
        # The last third is sent only once the fault is cleared (for kill-worker: once the site's worker
        # is back), so the faulted site's recovery is always observed under traffic.
        sending = asyncio.create_task(
            traffic.run(on_progress=progress, pause_before=2 * plan.messages // 3, resume=cleared)
        )
        fault_at = cleared_at = 0.0
        injected = False
        try:
            await _until(third, sending)
            fault_at = await self._inject(sims, watcher)
            injected = True
            await _until(two_thirds, sending)
            cleared_at = await self._clear(sims, watcher)
            injected = False
            cleared.set()
            result = await sending
            self.send_rate_per_s = result.sent / max(time.time() - sending_started, 1e-6)
            self._say(
                f"sent {result.sent} ({self.send_rate_per_s:.0f}/s): {len(result.accepted)} accepted, "
                f"refused {result.refused or 'none'}"
            )
            tracker.track(result.accepted)
            await self._settle(
                tracker, key=key, accepted=list(result.accepted), unobserved_sites=unobserved_sites
            )
        finally:
            if injected and plan.fault != "kill-worker":
                with contextlib.suppress(SimulatorUnavailable):
                    await sims[plan.site].set_fault("none")
            sending.cancel()
            await tracker.stop()
        stats_after = {site: await sim.stats() for site, sim in sims.items()}
        tracker.track(result.accepted)
        received = tracker.received_ids()
        missing = {m for m in result.accepted if m not in received}
        ambiguous = await self._ambiguous_attempts(key=key, ids=list(result.accepted))
        statuses = {m: s for m, s in self._statuses.items() if m in missing}
        self.observation = Observation(
            accepted=result.accepted,
            receipts=tracker.receipts(),
            statuses=statuses,
            fault_site=plan.site,
            fault=plan.fault,
            fault_at=fault_at,
            cleared_at=cleared_at,
            duplicate_counter_increase=_duplicate_increase(stats_before, stats_after),
            ambiguous_attempts=ambiguous,
            refused=result.refused,
            delivered_status_counts=unobserved_sites,
        )
        return compute(self.observation)

    async def _inject(self, sims: dict[str, SimulatorAdmin], watcher: HeartbeatWatcher) -> float:
        plan = self._plan
        if plan.fault != "kill-worker":
            await sims[plan.site].set_fault(plan.fault)
            self._say(f"fault {plan.fault!r} injected at site {plan.site}")
            return time.time()
        self._killed = frozenset(
            watcher.kill_site(plan.site, max_age_s=3 * self._config.worker.heartbeat_interval_s + 1)
        )
        if not self._killed:
            raise DrillRefused(f"found no live worker process of site {plan.site!r} to kill")
        self._say(f"killed the workers of site {plan.site}: pids {sorted(self._killed)}")
        return time.time()

    async def _clear(self, sims: dict[str, SimulatorAdmin], watcher: HeartbeatWatcher) -> float:
        plan = self._plan
        if plan.fault != "kill-worker":
            await sims[plan.site].set_fault("none")
            cleared_at = time.time()
            self._say(f"fault cleared at site {plan.site}")
            # Requests sent into a black hole fail only at their timeout, after the clear: a heartbeat
            # before then can still show the breaker closed, about to open. Only one sent once those
            # have failed says the site really consumes again.
            settled_at = (
                cleared_at
                + self._config.sites[plan.site].timeout_s
                + self._config.worker.heartbeat_interval_s
            )
            try:
                await watcher.wait_for_consuming(
                    plan.site, since=settled_at, timeout_s=self._recovery_wait_s()
                )
                self._say(f"site {plan.site} consumes again")
            except TimeoutError:
                self._say(
                    f"site {plan.site} did not report a closed breaker within {self._recovery_wait_s():g} s"
                )
            return cleared_at
        try:
            beat = await watcher.wait_for(plan.site, timeout_s=RESTART_TIMEOUT_S, excluding_pids=self._killed)
        except TimeoutError:
            self._say(f"no worker of site {plan.site} came back within {RESTART_TIMEOUT_S:g} s")
            return time.time()
        back_at = watcher.first_seen.get(beat.worker, time.time())
        self._say(f"site {plan.site} has a worker again: pid {beat.pid}")
        return back_at

    def _recovery_wait_s(self) -> float:
        # The breaker's cool-down doubles with each failed probe (up to 8x), and a heartbeat has to follow.
        worker = self._config.worker
        longest_timeout_s = max((site.timeout_s for site in self._config.sites.values()), default=0.0)
        return longest_timeout_s + 8 * worker.breaker_cooldown_s + 3 * worker.heartbeat_interval_s + 5

    async def _settle(
        self, tracker: ReceiptTracker, *, key: str, accepted: list[str], unobserved_sites: bool
    ) -> None:
        """Wait until every accepted id was received or reached a terminal failure, or the bound passes.

        With a real platform the drill cannot see receipts there, so `delivered` counts as arrived.
        """
        final = _FINAL | {"delivered"} if unobserved_sites else _FINAL
        deadline = time.monotonic() + self._plan.settle_timeout_s
        self._say(f"waiting up to {self._plan.settle_timeout_s:g} s for {len(accepted)} messages to settle")
        asked_at_change = -1.0
        while time.monotonic() < deadline:
            received = tracker.received_ids()
            missing = [m for m in accepted if m not in received and self._statuses.get(m) not in final]
            if not missing:
                return
            quiet = time.time() - tracker.last_change_at >= QUIET_S
            if quiet and asked_at_change != tracker.last_change_at:
                asked_at_change = tracker.last_change_at
                await self._update_statuses(key=key, ids=missing)
            await asyncio.sleep(0.5)
        received = tracker.received_ids()
        await self._update_statuses(key=key, ids=[m for m in accepted if m not in received])

    async def _update_statuses(self, *, key: str, ids: list[str]) -> None:
        for message_id, message in (await fetch_all(self._client, url=self._url, key=key, ids=ids)).items():
            if message is not None and isinstance(message.get("status"), str):
                self._statuses[message_id] = message["status"]

    async def _ambiguous_attempts(self, *, key: str, ids: list[str]) -> int | None:
        messages = await fetch_all(self._client, url=self._url, key=key, ids=ids)
        known = [m for m in messages.values() if m is not None]
        for message_id, message in messages.items():
            if message is not None and isinstance(message.get("status"), str):
                self._statuses.setdefault(message_id, message["status"])
        return sum(ambiguous_in(m) for m in known) if known else None


async def _until(event: asyncio.Event, sending: asyncio.Task[TrafficResult]) -> None:
    """Wait for `event`; if the traffic ends first, its error (or a clear one) is raised here."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, sending}, return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiting.cancel()
        sending.result()  # re-raises what stopped the traffic
        raise DrillRefused("the traffic ended before the fault's turn came")


_FINAL = frozenset({"rejected", "expired", "dead"})


def _duplicate_increase(before: dict[str, SimStats], after: dict[str, SimStats]) -> dict[str, int]:
    return {site: after[site].duplicates - before[site].duplicates for site in before if site in after}


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render(verdict: Verdict, console: Console) -> None:
    table = Table(title=f"Drill: {verdict.fault} at site {verdict.fault_site}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("accepted", str(verdict.accepted))
    for site, count in verdict.delivered_per_site.items():
        table.add_row(f"delivered by site {site}", str(count))
    table.add_row("delivered (unique)", str(verdict.delivered))
    for status, count in sorted(verdict.dead_lettered.items()):
        table.add_row(f"settled as {status}", str(count))
    lost_style = "bold green" if verdict.lost == 0 else "bold red"
    table.add_row("lost", f"[{lost_style}]{verdict.lost}[/]")
    if verdict.unsettled:
        table.add_row("  of which still pending", str(verdict.unsettled))
    table.add_row("duplicates", str(verdict.duplicates))
    table.add_row(
        "ambiguous attempts", "-" if verdict.ambiguous_attempts is None else str(verdict.ambiguous_attempts)
    )
    if verdict.refused:
        table.add_row("refused at submit", ", ".join(f"{k}: {v}" for k, v in verdict.refused.items()))
    table.add_row("fault duration", _fmt_s(verdict.fault_duration_s))
    table.add_row("failover gap (longest hold-up)", _fmt_s(verdict.failover_gap_s))
    table.add_row("longest silence, all sites", _fmt_s(verdict.silence_gap_s))
    table.add_row("first receipt at another site", _fmt_s(verdict.first_other_site_s))
    table.add_row("recovery of the faulted site", _fmt_s(verdict.recovery_s))
    console.print(table)
    if verdict.lost_ids:
        console.print(f"lost ids (first {len(verdict.lost_ids)}): {' '.join(verdict.lost_ids)}")
    console.print(
        "[bold green]PASSED[/]: nothing lost" if verdict.passed else "[bold red]FAILED[/]: messages lost"
    )


async def _drill(plan: DrillPlan, *, as_json: bool) -> int:
    config = settings()
    quiet_http_client_logs()
    console = Console(stderr=as_json, log_path=False)
    say: Callable[[str], None] = (lambda _: None) if as_json else console.log
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=128)) as client:
        drill = Drill(config=config, plan=plan, client=client, say=say)
        try:
            verdict = await drill.run()
        except (DrillRefused, SimulatorUnavailable) as exc:
            if as_json:
                typer.echo(json.dumps({"refused": str(exc)}))
            Console(stderr=True).print(f"relay drill: {exc}")
            return EXIT_USAGE
    if as_json:
        run = {
            "messages": plan.messages,
            "rate_per_s": plan.rate_per_s,
            "send_rate_per_s": round(drill.send_rate_per_s, 1),
        }
        typer.echo(json.dumps(verdict.as_dict() | {"run": run}))
    else:
        render(verdict, console)
    return verdict.exit_code


def register(app: typer.Typer) -> None:
    """Add `relay drill` to the `relay` app."""

    @app.command("drill")
    def drill(
        site: str = typer.Option("a", "--site", help="Site to inject the fault at."),
        fault: str = typer.Option(..., "--fault", help="down | blackhole | error | kill-worker"),
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
        run_dir: Path = typer.Option(Path(".run"), "--run-dir", help="Where the drill keeps its API key."),
    ) -> None:
        """Failover drill: traffic, a fault at one site, a verdict. Exit 0 only if nothing was lost.

        Faults: down (refused connections), blackhole (no answer), error (500s, nothing taken), kill-worker.

        kill-worker SIGKILLs the site's workers on this host; `relay up` restarts them.

        The fault begins after a third of the messages and ends after two thirds; the last third follows.

        Failover gap: the longest hold-up of a message by the fault, acceptance to first receipt anywhere.

        Receipts are polled every 0.1 s. Exit 1: messages were lost; exit 2: the drill refused to run.
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
        raise typer.Exit(asyncio.run(_drill(plan, as_json=as_json)))
