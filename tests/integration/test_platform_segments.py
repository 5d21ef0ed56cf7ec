"""The relay never reports as delivered a message its platform was configured to cut.

Against a real Kannel whose sendsms-user keeps Kannel's own defaults (one part, no concatenation) and a
real Jasmin (`long_content_max_parts` 5): a text longer than a site carries whole goes to a site that
carries it, is refused at submit when none does, and is dead-lettered naming its segments when it was
queued for a site that can no longer carry it. The whole relay runs: the ingress, the broker, workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ingress.segments import count_segments
from ops.harness.deployment import delete_topology, local_config, settings_of
from ops.harness.jasmin import PASSWORD, USERNAME, JasminInstance
from ops.harness.jobs import JobPublisher, wait_for_consumers, wait_until
from ops.harness.kannel import KannelInstance, running_kannel
from ops.harness.simulators import LocalSimulator, running_simulator
from ops.harness.smsc import RunningSmsc
from shared.model import DeadReason, Job, Outcome, Status, new_message_id
from shared.store.migrate import upgrade
from tests.helpers import RELAY, spawned
from tests.ingress_helpers import Api, api_for, sms
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform

pytestmark = pytest.mark.integration


def long_text(tag: str, length: int) -> str:
    """A GSM-7 text of `length` characters that starts with `tag`, so each part names its message."""
    return (tag + " " + "long text " * (length // 10 + 1))[:length]


def kannel_site(kannel: KannelInstance) -> dict[str, Any]:
    return {
        "platform": "kannel",
        "url": kannel.sendsms_url,
        "username": kannel.username,
        "password": kannel.password,
        "timeout_s": 2.0,
    }


@pytest.fixture(scope="module")
def kannel(
    tmp_path_factory: pytest.TempPathFactory, kannel_binaries: dict[str, str]
) -> Iterator[KannelInstance]:
    with running_kannel(tmp_path_factory.mktemp("kannel"), kannel_binaries, kannel_defaults=True) as instance:
        yield instance


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[LocalSimulator]:
    with running_simulator("b", log=tmp_path / "sim-b.log") as sim:
        yield sim


@contextlib.asynccontextmanager
async def workers(
    tmp_path: Path, broker_url: str, prefix: str, sites: Mapping[str, Mapping[str, Any]]
) -> AsyncIterator[tuple[Path, JobPublisher]]:
    """One worker process per site, all consuming; the configuration they read."""
    config = local_config(tmp_path, broker_url=broker_url, prefix=prefix, sites=sites)
    try:
        with contextlib.ExitStack() as stack:
            for site in sites:
                args = [*RELAY, "--config", str(config), "worker", "--site", site, "--metrics-port", "0"]
                stack.enter_context(spawned(args, log=tmp_path / f"worker-{site}.log"))
            async with JobPublisher(config=config) as jobs:
                await wait_for_consumers(jobs, dict.fromkeys(sites, len(sites)), timeout_s=40)
                yield config, jobs
    finally:
        await delete_topology(broker_url, config)


@contextlib.asynccontextmanager
async def relay(
    tmp_path: Path, broker_url: str, prefix: str, sites: Mapping[str, Mapping[str, Any]]
) -> AsyncIterator[Api]:
    """The whole relay: the ingress (in this process, its recorder folding the workers' reports into the
    store) and one worker process per site."""
    async with workers(tmp_path, broker_url, prefix, sites) as (config, _):
        settings = settings_of(config)
        await asyncio.to_thread(upgrade, settings.store)
        async with api_for(settings) as api:
            yield api


async def statuses(api: Api, ids: list[str], *, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Each message's status resource once every one is terminal (or as they are after the timeout)."""
    found: dict[str, dict[str, Any]] = {}

    async def all_final() -> bool:
        for message_id in ids:
            answer = await api.client.get(f"/v1/messages/{message_id}", headers=api.auth())
            if answer.status_code == 200:
                found[message_id] = answer.json()
        return all(found.get(i, {}).get("status") in {"sent", "rejected", "dead"} for i in ids)

    await wait_until(all_final, timeout_s=timeout_s, interval_s=0.3)
    return found


@pytest.mark.kannel
async def test_kannel_with_its_defaults_accepts_a_long_text_and_delivers_one_part(
    kannel: KannelInstance,
) -> None:
    """Why a Kannel site carries one segment unless told otherwise: the cut the relay must not record."""
    text = long_text("cut", 400)
    platform = KannelPlatform(
        url=kannel.sendsms_url, username=kannel.username, password=kannel.password, timeout_s=2.0
    )
    before = len(kannel.received())
    try:
        [result] = await platform.send(
            [
                Job(
                    id=new_message_id(),
                    tenant="t",
                    to="+31612345678",
                    sender="Bank",
                    body=text,
                    expires_at=2e9,
                )
            ]
        )
    finally:
        await platform.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [arrived] = kannel.wait_for_received(before + 1)[before:]
    assert arrived.text == text[:160]


@pytest.mark.kannel
async def test_a_long_text_for_a_kannel_site_goes_whole_to_a_site_that_carries_it(
    tmp_path: Path, broker_url: str, prefix: str, kannel: KannelInstance, simulator: LocalSimulator
) -> None:
    sites = {"a": kannel_site(kannel), "b": {"url": simulator.url, "timeout_s": 1.0}}
    before = len(kannel.received())
    async with relay(tmp_path, broker_url, prefix, sites) as api:
        bodies = [long_text(f"long{n}", 400) for n in range(4)] + [f"short {n}" for n in range(4)]
        answers = [await api.submit(sms(body=body)) for body in bodies]
        assert [a.status_code for a in answers] == [202] * len(bodies)
        ids = [a.json()["id"] for a in answers]
        found = await statuses(api, ids)
    assert {i: found[i]["status"] for i in ids} == dict.fromkeys(ids, "sent")
    long_ids, short_ids = ids[:4], ids[4:]
    # Every long text was sent to site b only, and arrived there; Kannel never saw any part of one.
    assert all({h["site"] for h in found[i]["history"]} == {"b"} for i in long_ids)
    assert set(long_ids) <= set(simulator.references())
    at_kannel = [m.text for m in kannel.received()[before:]]
    assert not [text for text in at_kannel if text.startswith("long")], at_kannel
    # Short texts still go to both sites (round-robin): Kannel carries what it carries whole.
    assert {h["site"] for i in short_ids for h in found[i]["history"]} == {"a", "b"}


@pytest.mark.kannel
async def test_a_long_text_no_site_carries_is_refused_at_submit(
    tmp_path: Path, broker_url: str, prefix: str, kannel: KannelInstance
) -> None:
    async with relay(tmp_path, broker_url, prefix, {"a": kannel_site(kannel)}) as api:
        refused = await api.submit(sms(body=long_text("refused", 400)))
        accepted = await api.submit(sms(body="x" * 160))
    assert refused.status_code == 422
    [error] = refused.json()["errors"]
    assert (error["field"], error["message"]) == ("body", "takes 3 gsm7 segments; at most 1 are allowed")
    assert accepted.status_code == 202


@pytest.mark.kannel
async def test_a_queued_job_no_site_carries_any_more_is_dead_lettered_never_sent(
    tmp_path: Path, broker_url: str, prefix: str, kannel: KannelInstance
) -> None:
    """A job routed before the sites' limits fell (e.g. under an earlier configuration)."""
    before = len(kannel.received())
    text = long_text("queued", 400)
    now = time.time()
    jobs_made = [
        Job(
            id=new_message_id(),
            tenant="t",
            to="+31612345678",
            sender="Bank",
            body=body,
            accepted_at=now,
            expires_at=now + 600,
            segments=count_segments(body).segments,
        )
        for body in (text, "fits in one")
    ]
    async with workers(tmp_path, broker_url, prefix, {"a": kannel_site(kannel)}) as (_, jobs):
        for job in jobs_made:
            await jobs.publish(job, site="a")
        assert await jobs.wait_all_final(timeout_s=30)
        [(dead_job, verdict)] = await jobs.dead_letters()
        finals = await jobs.final_statuses()
    long_job, short_job = jobs_made
    assert dead_job.id == long_job.id
    assert (verdict["reason"], verdict["detail"]) == (
        DeadReason.REJECTED,
        "takes 3 segments; sites carry at most 1",
    )
    assert finals == {long_job.id: [Status.REJECTED], short_job.id: [Status.SENT]}
    assert [m.text for m in kannel.wait_for_received(before + 1)[before:]] == ["fits in one"]


@pytest.mark.jasmin
async def test_jasmin_accepts_a_six_segment_text_and_delivers_five(
    jasmin: JasminInstance, smsc: RunningSmsc
) -> None:
    """Why a Jasmin site carries five segments unless told otherwise: `long_content_max_parts`."""
    smsc.admin("POST", "/reset")
    six = long_text("six", 153 * 5 + 100)
    platform = JasminPlatform(url=jasmin.send_url, username=USERNAME, password=PASSWORD, timeout_s=5.0)
    try:
        [result] = await platform.send(
            [Job(id=new_message_id(), tenant="t", to="+31612345678", sender="Bank", body=six, expires_at=2e9)]
        )
    finally:
        await platform.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [taken] = smsc.wait_for_messages(1)
    assert (taken["text"], taken["parts"]) == (six[: 153 * 5], 5)


@pytest.mark.jasmin
async def test_a_jasmin_site_carries_five_segments_whole_and_hands_on_six(
    tmp_path: Path,
    broker_url: str,
    prefix: str,
    jasmin: JasminInstance,
    smsc: RunningSmsc,
    simulator: LocalSimulator,
) -> None:
    smsc.admin("POST", "/reset")
    jasmin_site = {
        "platform": "jasmin",
        "url": jasmin.send_url,
        "username": USERNAME,
        "password": PASSWORD,
        "timeout_s": 5.0,
    }
    five, six = long_text("five", 153 * 5), long_text("six", 153 * 5 + 1)
    assert (count_segments(five).segments, count_segments(six).segments) == (5, 6)
    sites = {"a": jasmin_site, "b": {"url": simulator.url, "timeout_s": 1.0}}
    async with relay(tmp_path, broker_url, prefix, sites) as api:
        # Round-robin: the five-segment texts go one to each site, the six-segment ones to b only.
        answers = [await api.submit(sms(body=body)) for body in (five, five, six, six)]
        assert [a.status_code for a in answers] == [202] * 4
        ids = [a.json()["id"] for a in answers]
        found = await statuses(api, ids)
    assert {i: found[i]["status"] for i in ids} == dict.fromkeys(ids, "sent")
    five_ids, six_ids = ids[:2], ids[2:]
    assert all({h["site"] for h in found[i]["history"]} == {"b"} for i in six_ids)
    assert set(six_ids) <= set(simulator.references())
    via_jasmin = [i for i in five_ids if found[i]["history"][-1]["site"] == "a"]
    assert via_jasmin, "no five-segment text went through Jasmin"
    taken = smsc.wait_for_messages(len(via_jasmin))
    # What reached the SMSC through Jasmin is the whole text, in five parts, and never a six.
    assert [(m["text"], m["parts"]) for m in taken] == [(five, 5)] * len(via_jasmin)
