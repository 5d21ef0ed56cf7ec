"""Failover between an SMPP site and an HTTP site loses nothing.

Real processes: `relay smsc-sim` as site a's SMSC, `relay platform-sim` as site b's http-json platform,
a `relay worker` per site, the real broker. The SMSC goes down mid-stream (port closed, bound sessions
cut): every job reaches a platform, those published while it is down through site b, and a job reaches a
platform twice only when an attempt of it was marked a possible duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.harness.deployment import delete_topology, local_config
from ops.harness.jobs import STREAM_GROUP, JobPublisher, wait_for_consumers, wait_until
from ops.harness.processes import RELAY, free_port, spawned
from ops.harness.simulators import SMSC_COMMAND, LocalSimulator, running_simulator

pytestmark = pytest.mark.integration

SYSTEM_ID, PASSWORD = "relay", "secret"
STREAM_JOBS = 300
STREAM_RATE_PER_S = 150.0


@dataclass
class SmppAndHttp:
    config: Path
    smsc: LocalSimulator  # site a
    http: LocalSimulator  # site b
    metrics_url: str  # site a's worker
    tmp: Path

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("*.log")))


@contextlib.contextmanager
def platforms(tmp: Path) -> Iterator[tuple[LocalSimulator, LocalSimulator]]:
    smsc_args = ["--system-id", SYSTEM_ID, "--password", PASSWORD]
    with (
        running_simulator("a", log=tmp / "smsc-a.log", command=SMSC_COMMAND, extra_args=smsc_args) as smsc,
        running_simulator("b", log=tmp / "sim-b.log") as http,
    ):
        yield smsc, http


@pytest.fixture
async def smpp_and_http(tmp_path: Path, broker_url: str, prefix: str) -> AsyncIterator[SmppAndHttp]:
    with platforms(tmp_path) as (smsc, http):
        sites = {
            "a": {
                "platform": "smpp",
                "host": "127.0.0.1",
                "port": smsc.port,
                "system_id": SYSTEM_ID,
                "password": PASSWORD,
                "timeout_s": 1.0,
            },
            "b": {"url": http.url, "timeout_s": 1.0},
        }
        config = local_config(tmp_path, broker_url=broker_url, prefix=prefix, sites=sites)
        metrics_port = free_port()
        try:
            with contextlib.ExitStack() as stack:
                for site, port in (("a", metrics_port), ("b", 0)):
                    args = [*RELAY, "--config", str(config), "worker", "--site", site]
                    stack.enter_context(
                        spawned([*args, "--metrics-port", str(port)], log=tmp_path / f"worker-{site}.log")
                    )
                async with JobPublisher(config=config) as jobs:
                    await wait_for_consumers(jobs, {"a": 2, "b": 2}, timeout_s=40)
                yield SmppAndHttp(
                    config=config,
                    smsc=smsc,
                    http=http,
                    metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                    tmp=tmp_path,
                )
        finally:
            await delete_topology(broker_url, config)


async def platform_problems(metrics_url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(metrics_url)).text
    return {
        sample.labels["problem"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "relay_worker_platform_problem"
        for sample in family.samples
    }


async def test_smsc_down_mid_stream_every_job_goes_through_the_http_site(
    smpp_and_http: SmppAndHttp, broker_url: str, prefix: str
) -> None:
    r = smpp_and_http
    async with JobPublisher(config=r.config) as jobs:
        # Site a's SMPP session works before the fault.
        await jobs.stream(20, rate_per_s=100)
        assert await wait_until(lambda: r.smsc.stats()["unique"] >= 5, timeout_s=20), r.logs()
        stream = asyncio.create_task(jobs.stream(STREAM_JOBS, rate_per_s=STREAM_RATE_PER_S))
        await asyncio.sleep(0.5)
        r.smsc.set_fault("down")
        # The group of jobs being published at the switch may have been taken before it.
        fault_began = len(jobs.published) + STREAM_GROUP
        await stream
        assert await jobs.wait_all_final(timeout_s=60), r.logs()

        # The worker says why its site takes nothing, beside its open circuit.
        problems = await platform_problems(r.metrics_url)
        assert problems.get("SMSC unreachable") == 1.0, problems

        records = await jobs.events()
        assert not await jobs.dead_letters()
        finals = await jobs.final_statuses()
        assert all(set(statuses) == {"sent"} for statuses in finals.values()), finals
        at_smsc, at_http = set(r.smsc.references()), set(r.http.references())
        ids = [job.id for job in jobs.published]
        lost = [i for i in ids if i not in at_smsc | at_http]
        assert not lost, f"{len(lost)} of {len(ids)} jobs reached no platform\n{r.logs()}"
        # Published while the SMSC was down (it stays down until the end): site a's share all went
        # through site b.
        during_a = {i for i in ids[fault_began:] if jobs.site_of[i] == "a"}
        assert during_a and during_a <= at_http, len(during_a - at_http)
        # A job reached a platform twice only when an attempt of it was marked a possible duplicate.
        marked = {record.message_id for record in records if record.marks_duplicate}
        twice = at_smsc & at_http
        repeats = r.smsc.stats()["duplicates"] + r.http.stats()["duplicates"]
        assert twice <= marked, twice - marked
        assert repeats <= len(marked), (repeats, len(marked))

        # Healed, the SMSC takes site a's traffic again and the problem is over.
        r.smsc.set_fault("none")
        before = r.smsc.stats()["unique"]

        async def a_takes_work() -> bool:
            await jobs.stream(5, rate_per_s=50, sites=("a",))
            return r.smsc.stats()["unique"] > before

        assert await wait_until(a_takes_work, timeout_s=30, interval_s=0.5), r.logs()
        assert (await platform_problems(r.metrics_url)).get("SMSC unreachable") == 0.0
