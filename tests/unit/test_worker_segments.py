"""A job longer than the worker's site carries whole (`sites.<name>.max_segments`) is never sent there: it
goes to a site that carries it, or is dead-lettered naming its segments when no site does."""

from __future__ import annotations

from shared.envelope import H_ATTEMPT, H_SITE, H_SITE_ATTEMPT
from shared.model import DeadReason, Job, Status
from shared.topology import Topology, delay_queue, jobs_exchange
from tests.worker_fakes import Message, Rooms, make_job, rooms
from workers.policy import DeliveryState, elsewhere
from workers.settlement import Held

TOPOLOGY = Topology(prefix="p", sites=("a", "b", "c"), retry_delays_s=(1, 5))


def _state(site: str, attempt: int = 0) -> DeliveryState:
    return DeliveryState(attempt=attempt, site_attempt=attempt, site=site, origin=site)


def test_elsewhere_is_the_next_site_that_carries_the_job_whole() -> None:
    limits = {"a": 1, "b": 2, "c": 10}
    step = elsewhere(_state("a", 2), segments=3, tried_site="a", limits=limits, topology=TOPOLOGY)
    assert step is not None
    assert (step.exchange, step.routing_key, step.switched_site) == (jobs_exchange("p"), "c", True)
    # No attempt was made: the attempt count stays, the count at the new site starts again.
    assert step.state == DeliveryState(attempt=2, site_attempt=0, site="c", origin="a")
    after_b = elsewhere(_state("a"), segments=2, tried_site="a", limits=limits, topology=TOPOLOGY)
    assert after_b is not None and after_b.routing_key == "b"


def test_elsewhere_is_none_when_no_site_carries_the_job() -> None:
    limits = {"a": 1, "b": 2, "c": 3}
    assert elsewhere(_state("a"), segments=4, tried_site="a", limits=limits, topology=TOPOLOGY) is None


def test_a_standby_take_of_the_only_able_sites_job_waits_for_that_site() -> None:
    # Site a's worker took a job from site c's queue (c's workers are away); only c carries it.
    limits = {"a": 1, "b": 1, "c": 10}
    step = elsewhere(_state("c"), segments=3, tried_site="a", limits=limits, topology=TOPOLOGY)
    assert step is not None
    assert (step.exchange, step.routing_key) == ("", delay_queue("p", "c", 1))
    assert step.state == _state("c") and not step.switched_site


async def _held(r: Rooms, jobs: list[Job], *, queue_site: str = "a") -> tuple[Message, list[Held]]:
    message = Message(jobs)
    return message, await r.intake.hold(message.incoming(), queue_site)


async def test_a_job_too_long_for_the_site_goes_unsent_to_one_that_carries_it() -> None:
    r = rooms(sites={"a": {"max_segments": 1}, "b": {"max_segments": 5}})
    long_job = make_job(segments=3)
    message, held = await _held(r, [long_job])
    await r.delivery.run(held)
    assert r.platform.sent == []
    [handed] = r.publisher.published
    assert (handed.exchange, handed.routing_key, handed.jobs) == ("unit.jobs", "b", [long_job])
    assert (handed.headers[H_SITE], handed.headers[H_ATTEMPT], handed.headers[H_SITE_ATTEMPT]) == ("b", 0, 0)
    assert r.recorder.records == [] and message.settled == ["ack"]
    assert r.outcomes.totals.failed_over == 1


async def test_only_the_too_long_job_of_a_bundle_leaves_it() -> None:
    r = rooms(sites={"a": {"max_segments": 2}}, breaker_failure_threshold=10)
    short, long_job = make_job(segments=2), make_job(segments=3)
    message, held = await _held(r, [short, long_job])
    await r.delivery.run(held)
    assert r.platform.sent == [short]
    [handed] = r.publisher.published
    assert (handed.routing_key, handed.jobs) == ("b", [long_job])
    assert message.settled == ["ack"]


async def test_a_job_no_site_carries_is_dead_lettered_naming_its_segments() -> None:
    r = rooms(sites={"a": {"max_segments": 1}, "b": {"max_segments": 3}})
    message, held = await _held(r, [make_job(segments=4)])
    await r.delivery.run(held)
    assert r.platform.sent == []
    [dead] = r.publisher.to("unit.dead")
    verdict = dead.dead[1]
    assert (verdict["reason"], verdict["detail"], verdict["attempts"]) == (
        DeadReason.REJECTED,
        "takes 4 segments; sites carry at most 3",
        0,
    )
    [record] = r.recorder.records
    assert (record.status, record.detail) == (Status.REJECTED, "takes 4 segments; sites carry at most 3")
    assert message.settled == ["ack"]


async def test_a_standby_take_too_long_for_the_site_goes_back_through_the_delay_queue() -> None:
    r = rooms(sites={"a": {"max_segments": 1}})
    message, held = await _held(r, [make_job(segments=3)], queue_site="b")
    await r.delivery.run(held)
    assert r.platform.sent == []
    [handed] = r.publisher.published
    assert (handed.exchange, handed.routing_key) == ("", r.topology.delay_queue_for("b", 1))
    assert message.settled == ["ack"] and r.outcomes.totals.failed_over == 0


async def test_a_hand_over_not_confirmed_leaves_the_job_to_its_queue() -> None:
    r = rooms(sites={"a": {"max_segments": 1}})
    r.publisher.fail = True
    message, held = await _held(r, [make_job(segments=2)])
    await r.delivery.run(held)
    assert r.platform.sent == [] and message.settled == ["nack requeue=True"]
