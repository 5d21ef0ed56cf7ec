"""The circuit supervisor: off every queue while the breaker is open, then ONE real job as the probe."""

from __future__ import annotations

import asyncio

from shared.model import CircuitState, Outcome
from tests.worker_fakes import Message, Platform, Rooms, make_job, rooms
from workers.platforms.base import Result
from workers.supervisor import CircuitSupervisor


def _supervisor(r: Rooms) -> CircuitSupervisor:
    return CircuitSupervisor(
        circuit=r.circuit, consumers=r.consumers, intake=r.intake, delivery=r.delivery, stop=r.stop, site="a"
    )


def _open(r: Rooms) -> None:
    for _ in range(r.settings.worker.breaker_failure_threshold):
        r.circuit.failure()
    assert r.circuit.state is CircuitState.OPEN


async def test_an_open_breaker_cancels_the_consumers_then_hands_back_then_probes_and_closes() -> None:
    r = rooms()
    await r.consumers.start()
    waiting = Message([make_job()])
    await r.intake.receive(waiting.incoming(), "a")
    probe_job = make_job()
    r.queues["a"].waiting.append(Message([probe_job]))
    _open(r)
    await _supervisor(r).ride_out_open_circuit()
    # Cancelled before the hand-back: nacked while consuming, the job would come straight back.
    assert r.queues["a"].events == ["consume", "cancel", "consume"]
    assert waiting.settled == ["nack requeue=True"]
    assert r.platform.sent == [probe_job]
    assert r.circuit.state is CircuitState.CLOSED and r.consumers.running


async def test_a_failed_probe_opens_the_breaker_again_for_longer() -> None:
    r = rooms(platform=Platform(lambda job: Result(Outcome.UNAVAILABLE, "down")))
    _open(r)
    first_cooldown_s = r.circuit.breaker.cooldown_s
    r.queues["b"].waiting.append(Message([make_job()]))  # the other site's queue when its own is empty
    supervisor = _supervisor(r)
    probed = await asyncio.wait_for(_probe_once(r, supervisor), timeout=5)
    assert probed and len(r.platform.sent) == 1
    assert r.circuit.state is CircuitState.OPEN and r.circuit.breaker.cooldown_s == 2 * first_cooldown_s
    assert not r.consumers.running


async def _probe_once(r: Rooms, supervisor: CircuitSupervisor) -> bool:
    await asyncio.sleep(r.circuit.breaker.seconds_until_probe())
    assert r.circuit.begin_probe()
    return await supervisor.probe()


async def test_with_every_queue_empty_the_consumers_come_back_half_open() -> None:
    r = rooms()
    _open(r)
    await _supervisor(r).ride_out_open_circuit()
    assert r.platform.sent == []
    assert r.circuit.state is CircuitState.HALF_OPEN and r.consumers.running


async def test_the_rest_of_a_probed_bundle_waits_for_the_runners() -> None:
    r = rooms()
    jobs = [make_job() for _ in range(3)]
    message = Message(jobs)
    r.queues["a"].waiting.append(message)
    _open(r)
    await _supervisor(r).ride_out_open_circuit()
    assert r.platform.sent == jobs[:1]
    assert [held.job for held in r.intake.take_all()] == jobs[1:]
    assert message.settled == []


async def test_a_stop_ends_the_supervision() -> None:
    r = rooms(breaker_cooldown_s=60)
    await r.consumers.start()
    _open(r)
    supervisor = _supervisor(r)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)
    r.stop.set()
    r.circuit.wake.set()
    await asyncio.wait_for(task, timeout=2)
    assert not r.consumers.running
