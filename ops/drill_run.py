"""One drill run: traffic through the HTTP API, a fault at one site for its middle third, observation.

It resets nothing: it counts only its own message ids in what the simulated platforms received. See
`ops.drill_verdict` for the exact definitions of each figure.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping

import httpx

from ops.drill_broker_node import BROKER_NODE, BrokerNodeFault
from ops.drill_faults import Fault, FaultSwitch
from ops.drill_heartbeats import HeartbeatWatcher
from ops.drill_keys import obtain_key
from ops.drill_plan import FAULTS, DrillPlan, DrillRefused, DrillTarget, Pace
from ops.drill_sims import ReceiptTracker, probe_simulators
from ops.drill_status import MessageStatuses
from ops.drill_traffic import Traffic, TrafficResult
from ops.drill_verdict import Observation, Verdict, compute
from ops.harness.simulators import SimulatorAdmin
from ops.launcher import api_url
from shared.errors import TransientError

DRILL_TENANT = "drill"


class Drill:
    """One run against `target`: `run()` returns the verdict; `observation` and `pace` tell what it saw."""

    def __init__(
        self, *, target: DrillTarget, plan: DrillPlan, client: httpx.AsyncClient, say: Callable[[str], None]
    ) -> None:
        self._config = target.config
        self._target = target
        self._plan = plan
        self._client = client
        self._say = say
        self._url = api_url(target.config)
        self._run_id = uuid.uuid4().hex[:8]
        self.observation: Observation | None = None  # what the last run saw, for benchmarks' plots
        self.pace = Pace(asked_per_s=plan.rate_per_s, sent_per_s=0.0)
        self.fault_notes: list[str] = []  # what the fault did (killed, restarted), for --json too

    def _note(self, text: str) -> None:
        self.fault_notes.append(text)
        self._say(text)

    async def run(self) -> Verdict:
        plan = self._plan
        if not self._config.sites:
            raise DrillRefused(
                "no site is configured: give --config, or the --run-dir of a running `relay up`"
            )
        if plan.site not in self._config.sites:
            raise DrillRefused(f"unknown site {plan.site!r}; sites: {', '.join(self._config.site_names)}")
        if plan.fault not in FAULTS:
            raise DrillRefused(f"unknown fault {plan.fault!r}; faults: {', '.join(FAULTS)}")
        sims, problems = await probe_simulators(self._config.site_names, self._target.simulators)
        if problems and not plan.allow_real_platforms:
            raise DrillRefused(
                "refusing to drill against platforms that are not simulators (--allow-real-platforms "
                "overrides): " + "; ".join(problems)
            )
        await self._check_ready()
        key = await self._key()
        async with HeartbeatWatcher(broker=self._config.broker) as watcher:
            # Heartbeats tell when the faulted site consumes again, so the last third of the traffic is
            # sent only then and the site's recovery is observed under traffic.
            faults: Fault
            if plan.fault == BROKER_NODE:
                faults = BrokerNodeFault(
                    site=plan.site,
                    config=self._config,
                    run_dir=plan.run_dir,
                    client=self._client,
                    say=self._note,
                )
            else:
                faults = FaultSwitch(
                    fault=plan.fault,
                    site=plan.site,
                    config=self._config,
                    sims=sims,
                    watcher=watcher,
                    say=self._note,
                )
            await faults.check_possible()
            self.observation = await self._observe(
                key=key, sims=sims, faults=faults, unobserved=bool(problems)
            )
        return compute(self.observation)

    async def _check_ready(self) -> None:
        try:
            response = await self._client.get(f"{self._url}/readyz", timeout=5.0)
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DrillRefused(f"the ingress at {self._url} does not answer: {exc!r}") from None
        if response.status_code != 200 or not answer.get("ready"):
            raise DrillRefused(f"the ingress at {self._url} is not ready: {answer}")

    async def _key(self) -> str:
        try:
            return await obtain_key(
                self._target.relay,
                tenant=DRILL_TENANT,
                key_file=self._plan.run_dir / "drill-key",
                api_url=self._url,
                client=self._client,
            )
        except TransientError as exc:
            raise DrillRefused(str(exc)) from None

    async def _observe(
        self, *, key: str, sims: Mapping[str, SimulatorAdmin], faults: Fault, unobserved: bool
    ) -> Observation:
        """Send through the fault, wait for every message to settle, and gather what happened."""
        plan = self._plan
        tracker = ReceiptTracker(sims=list(sims.values()))
        await tracker.baseline()
        duplicates_before = await _duplicate_counters(sims)
        statuses = MessageStatuses(client=self._client, url=self._url, key=key)
        self._say(
            f"drill {self._run_id}: {plan.messages} messages at {plan.rate_per_s:g}/s, "
            f"fault {plan.fault!r} at site {plan.site} from message {plan.messages // 3} "
            f"to message {2 * plan.messages // 3}"
        )
        tracker.start()
        try:
            result, fault_at, cleared_at = await self._send_through_fault(key=key, faults=faults)
            tracker.track(result.accepted)
            await statuses.settle(
                tracker,
                accepted=list(result.accepted),
                timeout_s=plan.settle_timeout_s,
                delivered_counts=unobserved,
                say=self._say,
            )
        finally:
            await faults.heal()
            await tracker.stop()
        duplicates_after = await _duplicate_counters(sims)
        received = tracker.received_ids()
        ambiguous = await statuses.ambiguous_attempts(list(result.accepted))
        return Observation(
            accepted=result.accepted,
            receipts=tracker.receipts(),
            statuses={m: s for m, s in statuses.statuses.items() if m not in received},
            fault_site=plan.site,
            fault=plan.fault,
            fault_at=fault_at,
            cleared_at=cleared_at,
            duplicate_counter_increase={
                site: duplicates_after[site] - before for site, before in duplicates_before.items()
            },
            ambiguous_attempts=ambiguous,
            refused=result.refused,
            delivered_status_counts=unobserved,
        )

    async def _send_through_fault(self, *, key: str, faults: Fault) -> tuple[TrafficResult, float, float]:
        """All the traffic, the fault on from a third of it to two thirds; the result, when the fault began
        and when it was cleared."""
        messages = self._plan.messages
        traffic = Traffic(
            client=self._client,
            api_url=self._url,
            key=key,
            run_id=self._run_id,
            count=messages,
            rate_per_s=self._plan.rate_per_s,
        )
        third, two_thirds, cleared = asyncio.Event(), asyncio.Event(), asyncio.Event()

        def progress(sent: int) -> None:
            # The fault follows the traffic, not the clock, so it covers the middle third of the messages
            # even when the ingress answers more slowly than the asked rate.
            if sent >= messages // 3:
                third.set()
            if sent >= 2 * messages // 3:
                two_thirds.set()

        # The last third is sent only once the fault is cleared (for kill-worker: once the site's worker is
        # back), so the faulted site's recovery is always observed under traffic.
        sending = asyncio.create_task(
            traffic.run(on_progress=progress, pause_before=2 * messages // 3, resume=cleared)
        )
        try:
            await _until(third, sending)
            fault_at = await faults.inject()
            await _until(two_thirds, sending)
            cleared_at = await faults.clear()
            cleared.set()
            result = await sending
        finally:
            sending.cancel()
        self.pace = Pace(asked_per_s=self._plan.rate_per_s, sent_per_s=result.rate_per_s)
        self._say(
            f"sent {result.sent}: {len(result.accepted)} accepted, refused {result.refused or 'none'}; "
            f"{self.pace.describe()}"
        )
        return result, fault_at, cleared_at


async def _until(event: asyncio.Event, sending: asyncio.Task[TrafficResult]) -> None:
    """Wait for `event`; if the traffic ends first, its error (or a clear one) is raised here."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, sending}, return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiting.cancel()
        sending.result()  # re-raises what stopped the traffic
        raise DrillRefused("the traffic ended before the fault's turn came")


async def _duplicate_counters(sims: Mapping[str, SimulatorAdmin]) -> dict[str, int]:
    """Each simulator's own count of repeated receipts."""
    return {site: (await asyncio.to_thread(sim.stats))["duplicates"] for site, sim in sims.items()}
