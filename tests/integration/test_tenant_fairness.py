"""Fair scheduling between tenants, with a real ingress, a real worker and the simulated platform: a
tenant with a backlog of 20,000 messages does not hold up another tenant's single message by more
than a second. Past `guard.bulk_after` unsettled messages a tenant's jobs go to its sites' bulk
queues, and a worker sends the jobs of its other queues first."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.topology import bulk_queue, site_queue
from tests.guard_helpers import new_key, served_ingress
from tests.helpers import RELAY, spawned
from tests.ingress_helpers import queued_jobs, sms
from tests.platform_sim_harness import running_sim

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKLOG = 20_000
BATCH = 100


async def test_a_tenants_backlog_of_20000_does_not_delay_anothers_message_by_a_second(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    with running_sim(log=tmp_path / "sim.log") as sim:
        # Slow enough that the backlog lasts through the measurement, as a real platform's would.
        await asyncio.to_thread(sim.set_fault, "slow", latency_ms=20)
        sites = {"RELAY_SITES__A__URL": sim.url, "RELAY_SITES__B__URL": sim.url}
        async with served_ingress(
            tmp_path, broker_url=broker_url, prefix=prefix, RELAY_GUARD__BULK_AFTER="1000", **sites
        ) as ingress:
            heavy, light = await new_key(ingress.env, "heavy"), await new_key(ingress.env, "light")
            async with ingress.client(heavy) as client:

                async def batches(first: int, count: int) -> None:
                    for n in range(first, first + count):
                        payload = {"messages": [sms(body=f"h{n}-{i}") for i in range(BATCH)]}
                        answer = await client.post("/v1/messages/batch", json=payload)
                        assert answer.status_code == 202, answer.text

                per_sender = BACKLOG // BATCH // 8
                await asyncio.gather(*(batches(s * per_sender, per_sender) for s in range(8)))
            normal = await queued_jobs(broker_url, site_queue(prefix, "a"))
            bulk = await queued_jobs(broker_url, bulk_queue(prefix, "a"))
            assert normal + bulk == BACKLOG and bulk >= BACKLOG - 1000 - 2 * BATCH, (normal, bulk)

            worker_env = {**ingress.env, "RELAY_WORKER__METRICS_PORT": "0"}
            with spawned(
                [*RELAY, "worker", "--site", "a", "--concurrency", "32"],
                env=worker_env,
                log=tmp_path / "worker.log",
            ):
                # The heavy tenant's first thousand (in the jobs queue) go first, then its bulk.
                for _ in range(600):
                    if (await asyncio.to_thread(sim.stats))["unique"] >= normal + 500:
                        break
                    await asyncio.sleep(0.2)
                async with ingress.client(light) as client:
                    answer = await client.post("/v1/messages", json=sms(body="the quiet tenant's code"))
                    accepted_at = time.monotonic()
                assert answer.status_code == 202
                message_id = answer.json()["id"]
                seen, since = False, 0
                while not seen and time.monotonic() - accepted_at < 30:
                    references, since = await asyncio.to_thread(sim.references_since, since)
                    seen = message_id in references
                    await asyncio.sleep(0.02)
                waited_s = time.monotonic() - accepted_at
                delivered = (await asyncio.to_thread(sim.stats))["unique"]
    assert seen, "the quiet tenant's message never reached the platform"
    assert delivered < BACKLOG * 0.9, f"the backlog was nearly gone ({delivered}): nothing was measured"
    assert waited_s < 1.0, f"the quiet tenant's message waited {waited_s:.2f} s behind the backlog"
