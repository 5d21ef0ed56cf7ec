"""End to end with two real Kannels as sites a and b: SIGKILL a's bearerbox mid-stream, lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import pytest

from ops.harness.deployment import delete_topology, write_toml
from ops.harness.jobs import JobPublisher, wait_for_consumers, wait_until
from ops.harness.kannel import KannelInstance, running_kannel
from shared.model import Job, Outcome, Status, new_message_id
from tests.helpers import RELAY, spawned

pytestmark = [pytest.mark.integration, pytest.mark.kannel]


def _job() -> Job:
    job_id = new_message_id()
    now = time.time()
    # The text is the id, so what the fake SMSCs log names each job.
    return Job(
        id=job_id,
        tenant="t",
        to="+31612345678",
        sender="Relay",
        body=job_id,
        accepted_at=now,
        expires_at=now + 600,
    )


def _config(tmp: Path, broker_url: str, prefix: str, kannels: dict[str, KannelInstance]) -> Path:
    sections: dict[str, dict[str, object]] = {
        "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 2.0},
        "log": {"level": "WARNING", "json": True},
        "worker": {
            "concurrency": 16,
            "breaker_failure_threshold": 3,
            "breaker_cooldown_s": 1.0,
            "attempts_per_site": 2,
            "max_attempts": 10,
            "retry_delays_s": [1, 2],
            "grace_s": 5.0,
            "metrics_port": 0,
        },
    }
    for site, kannel in kannels.items():
        sections[f"sites.{site}"] = {
            "platform": "kannel",
            "url": kannel.sendsms_url,
            "username": kannel.username,
            "password": kannel.password,
            "timeout_s": 2.0,
        }
    return write_toml(tmp / "relay.toml", sections)


async def test_kill_of_kannel_a_bearerbox_mid_stream_loses_nothing(
    tmp_path: Path, broker_url: str, prefix: str, kannel_binaries: dict[str, str]
) -> None:
    config: Path | None = None
    # The workers stop with the stack, before the topology is deleted: a worker still running when its
    # queues go would declare them again.
    try:
        with contextlib.ExitStack() as stack:
            kannel_a = stack.enter_context(running_kannel(tmp_path / "kannel-a", kannel_binaries))
            kannel_b = stack.enter_context(running_kannel(tmp_path / "kannel-b", kannel_binaries))
            config = _config(tmp_path, broker_url, prefix, {"a": kannel_a, "b": kannel_b})
            async with JobPublisher(config=config) as jobs:
                for site in ("a", "b"):
                    stack.enter_context(
                        spawned(
                            [
                                *RELAY,
                                "--config",
                                str(config),
                                "worker",
                                "--site",
                                site,
                                "--metrics-port",
                                "0",
                            ],
                            log=tmp_path / f"worker-{site}.log",
                        )
                    )
                await wait_for_consumers(jobs, {"a": 2, "b": 2}, timeout_s=40)
                stream = asyncio.create_task(jobs.stream(300, rate_per_s=150, make=_job))
                await asyncio.sleep(0.7)
                await asyncio.to_thread(kannel_a.kill_bearerbox)
                await stream
                # Everything a did not take went through b; what a's smsbox took before the kill sits in
                # a's bearerbox store, which delivers it once bearerbox is back.
                assert await jobs.wait_all_final(timeout_s=40), (tmp_path / "worker-a.log").read_text()[
                    -3000:
                ]
                await asyncio.to_thread(kannel_a.restart_bearerbox)
                ids = {job.id for job in jobs.published}

                def arrived() -> Counter[str]:
                    return Counter(m.text for m in [*kannel_a.received(), *kannel_b.received()])

                assert await wait_until(lambda: ids <= set(arrived()), timeout_s=30), len(
                    ids - set(arrived())
                )
                records = await jobs.events()
                ambiguous = {r.message_id for r in records if r.outcome is Outcome.AMBIGUOUS}
                duplicates = {text for text, n in arrived().items() if n > 1 and text in ids}
                assert duplicates <= ambiguous, duplicates - ambiguous
                finals = await jobs.final_statuses()
                assert all(set(s) == {Status.SENT} for s in finals.values())
                via_b = ids & {m.text for m in kannel_b.received()}
                a_jobs = {job.id for job in jobs.published if jobs.site_of[job.id] == "a"}
                assert via_b & a_jobs, "site a's jobs never went through site b"
    finally:
        if config is not None:
            await delete_topology(broker_url, config)
