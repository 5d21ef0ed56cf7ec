from __future__ import annotations

import asyncio

from ingress.bundler import Bundler
from shared.broker import CONFIRMED, Fate, Verdict
from shared.envelope import decode_jobs
from shared.model import Job, new_message_id


def _job() -> Job:
    return Job(id=new_message_id(), tenant="t", to="+31612345678", sender="S", body="b", expires_at=2e9)


class Broker:
    """Records what the bundler publishes; each publish waits for `release` before it is confirmed."""

    def __init__(self) -> None:
        self.published: list[tuple[str, list[Job], str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_site: str | None = None

    async def publish(self, body: bytes, site: str, message_id: str) -> Verdict:
        self.published.append((site, decode_jobs(body), message_id))
        await self.release.wait()
        return Verdict(Fate.UNKNOWN, "channel closed") if site == self.fail_site else CONFIRMED


async def test_jobs_added_together_leave_as_one_message_per_site() -> None:
    broker = Broker()
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=4)
    jobs = [(_job(), "ab"[n % 2]) for n in range(6)]
    confirms = [bundler.add(job, site) for job, site in jobs]
    await asyncio.gather(*confirms)
    by_site = {site: bundle for site, bundle, _ in broker.published}
    assert len(broker.published) == 2
    assert by_site == {"a": [j for j, s in jobs if s == "a"], "b": [j for j, s in jobs if s == "b"]}
    # The message id names the bundle's first job, which is a job's own id for a bundle of one.
    assert all(message_id == bundle[0].id for _, bundle, message_id in broker.published)


async def test_a_lone_job_leaves_alone_on_the_next_turn_of_the_loop() -> None:
    broker = Broker()
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=4)
    job = _job()
    await bundler.add(job, "a")
    assert broker.published == [("a", [job], job.id)]


async def test_bundles_hold_at_most_bundle_max_jobs() -> None:
    broker = Broker()
    bundler = Bundler(publish=broker.publish, bundle_max=10, in_flight_max=8)
    jobs = [_job() for _ in range(25)]
    await asyncio.gather(*(bundler.add(job, "a") for job in jobs))
    assert [len(bundle) for _, bundle, _ in broker.published] == [10, 10, 5]
    assert [job for _, bundle, _ in broker.published for job in bundle] == jobs


async def test_sites_take_turns_for_the_publish_slots() -> None:
    broker = Broker()
    bundler = Bundler(publish=broker.publish, bundle_max=10, in_flight_max=1)
    confirms = [bundler.add(_job(), "a") for _ in range(30)] + [bundler.add(_job(), "b") for _ in range(10)]
    await asyncio.gather(*confirms)
    assert [site for site, _, _ in broker.published] == ["a", "b", "a", "a"]


async def test_jobs_arriving_while_every_slot_waits_gather_into_the_next_bundle() -> None:
    broker = Broker()
    broker.release.clear()
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=1)
    first = bundler.add(_job(), "a")
    await asyncio.sleep(0)  # the first bundle leaves and waits for its confirm
    later = [bundler.add(_job(), "a") for _ in range(5)]
    await asyncio.sleep(0.01)
    assert len(broker.published) == 1 and not first.done()
    broker.release.set()
    await asyncio.gather(first, *later)
    assert [len(bundle) for _, bundle, _ in broker.published] == [1, 5]


async def test_a_bundle_not_confirmed_gives_its_verdict_to_each_of_its_jobs_and_no_other() -> None:
    broker = Broker()
    broker.fail_site = "b"
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=4)
    to_a = [bundler.add(_job(), "a") for _ in range(3)]
    to_b = [bundler.add(_job(), "b") for _ in range(3)]
    assert {v.fate for v in await asyncio.gather(*to_a)} == {Fate.CONFIRMED}
    assert {v.fate for v in await asyncio.gather(*to_b)} == {Fate.UNKNOWN}


async def test_a_job_is_withdrawn_only_before_its_bundle_leaves() -> None:
    broker = Broker()
    broker.release.clear()
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=1)
    left = bundler.add(_job(), "a")
    await asyncio.sleep(0)  # the first bundle leaves and waits for its confirm; no slot is free
    jobs = [_job() for _ in range(3)]
    waiting = [bundler.add(job, "a") for job in jobs]
    await asyncio.sleep(0.01)
    assert not bundler.withdraw(left)  # in flight: its verdict is still to come
    assert bundler.withdraw(waiting[1])
    broker.release.set()
    assert (await left).confirmed
    assert all(v.confirmed for v in await asyncio.gather(waiting[0], waiting[2]))
    # The withdrawn job never left; the two others went as one bundle.
    assert [bundle for _, bundle, _ in broker.published[1:]] == [[jobs[0], jobs[2]]]


async def test_closing_leaves_the_jobs_of_bundles_still_waiting_unknown() -> None:
    broker = Broker()
    broker.release.clear()
    bundler = Bundler(publish=broker.publish, bundle_max=50, in_flight_max=4)
    verdict = bundler.add(_job(), "a")
    await asyncio.sleep(0)
    await bundler.close()
    assert (await verdict).fate is Fate.UNKNOWN
