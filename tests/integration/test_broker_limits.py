"""The broker's own limits on the real RabbitMQ: a message a quorum queue delivered `broker.delivery_limit`
times is parked, never dropped, and the recorder makes it something an operator sees; the parked queue
itself keeps whatever it holds; a queue of an earlier version is refused by name; and the recorder does
not spend deliveries while the store is away."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import select

from ingress.recorder import Recorder
from shared.broker import ConfirmedPublisher, connect
from shared.envelope import H_ATTEMPT, encode_dead, encode_events, encode_job, encode_jobs
from shared.model import AttemptRecord, DeadReason, Outcome, Status
from shared.settings import StoreSettings
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade
from shared.store.models import Attempt, DeadLetter, Message
from shared.topology import (
    TopologyMismatch,
    dead_exchange,
    dead_queue,
    declare,
    events_exchange,
    events_queue,
    jobs_exchange,
    parked_queue,
    site_queue,
    topology_from,
)
from tests.integration.ops_support import invoke_relay, make_job, relay_env, run_relay

pytestmark = pytest.mark.integration

LIMIT = 2


@pytest.fixture
def settings(broker_cleanup, settings_factory, store_url):
    return settings_factory(broker={"delivery_limit": LIMIT})


async def declared(settings) -> None:
    connection = await aio_pika.connect(settings.broker.urls[0])
    async with connection:
        await declare(await connection.channel(), topology_from(settings))


async def publish(settings, body: bytes, *, exchange: str, routing_key: str = "", headers=None) -> None:
    connection = await connect(settings.broker)
    async with connection:
        publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=5)
        await publisher.publish(body, exchange=exchange, routing_key=routing_key, headers=headers or {})


async def hand_back(url: str, queue_name: str, *, times: int) -> int:
    """Take the head of `queue_name` and requeue it, `times` times, as a consumer that keeps failing does;
    how many deliveries there were."""
    deliveries = 0
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        for _ in range(times):
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            deliveries += 1
            await message.nack(requeue=True)
    return deliveries


async def depth(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def eventually(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (value := await check()):
        if time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)
    return value


async def test_reports_and_jobs_delivered_past_the_limit_are_parked_then_folded_into_the_store(settings):
    url, prefix = settings.broker.url, settings.broker.prefix
    await declared(settings)
    job, bundled, reported, rejected = (make_job(tenant="bank-a") for _ in range(4))
    attempt = AttemptRecord(
        message_id=reported.id, site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT
    )
    await publish(
        settings, encode_job(job), exchange=jobs_exchange(prefix), routing_key="a", headers={H_ATTEMPT: 3}
    )
    await publish(settings, encode_jobs([bundled, reported]), exchange=jobs_exchange(prefix), routing_key="b")
    await publish(settings, encode_events([attempt]), exchange=events_exchange(prefix))
    dead = encode_dead(
        rejected, site="b", reason=DeadReason.REJECTED, detail="invalid destination", attempts=1
    )
    await publish(settings, dead, exchange=dead_exchange(prefix))

    # A consumer that keeps handing them back: the broker delivers each LIMIT + 1 times, then parks it.
    for name in (site_queue(prefix, "a"), site_queue(prefix, "b"), events_queue(prefix), dead_queue(prefix)):
        assert await hand_back(url, name, times=LIMIT + 5) == LIMIT + 1
        assert await depth(url, name) == 0
    assert await eventually(lambda: _equals(depth(url, parked_queue(prefix)), 4))

    # The recorder (an ingress's) turns them into store rows and empties the parked queue.
    store = StoreSettings(url=settings.store.url)
    engine = make_engine(store)
    recorder = Recorder(sessions=make_sessionmaker(engine), prefix=prefix)
    connection = await connect(settings.broker)
    try:
        await recorder.start(connection)
        assert await eventually(lambda: _equals(depth(url, parked_queue(prefix)), 0))
        letters = await eventually(lambda: _dead_letters(engine, expect=4))
    finally:
        await recorder.close()
        await connection.close()
    assert {(d.message_id, d.reason, d.site) for d in letters} == {
        (job.id, "redelivery-limit", "a"),
        (bundled.id, "redelivery-limit", "b"),
        (reported.id, "redelivery-limit", "b"),
        (rejected.id, "rejected", "b"),
    }
    by_id = {d.message_id: d for d in letters}
    assert by_id[job.id].attempts == 3 and by_id[job.id].job["body"] == job.body
    assert site_queue(prefix, "a") in by_id[job.id].detail
    async with make_sessionmaker(engine)() as session:
        attempts = (await session.execute(select(Attempt.message_id, Attempt.outcome))).all()
        statuses = dict((await session.execute(select(Message.id, Message.status))).all())
    await engine.dispose()
    # The parked report is folded as if it came from its queue: the attempt, and the delivery it reports
    # outranks the redelivery-limit dead letter of the same message's job.
    assert attempts == [(reported.id, "accepted")]
    assert statuses == {job.id: "dead", bundled.id: "dead", reported.id: "sent", rejected.id: "rejected"}

    # An operator sees them, by their reason, and can replay them.
    env = relay_env(broker_url=url, prefix=prefix, store_url=settings.store.url)
    listed = await asyncio.to_thread(
        invoke_relay, ["dead", "list", "--reason", "redelivery-limit", "--json"], env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert {json.loads(line)["id"] for line in listed.stdout.splitlines()} == {
        job.id,
        bundled.id,
        reported.id,
    }


async def test_the_parked_queue_keeps_a_message_however_often_it_is_handed_back(settings):
    url, prefix = settings.broker.url, settings.broker.prefix
    await declared(settings)
    await publish(settings, encode_job(make_job()), exchange=jobs_exchange(prefix), routing_key="a")
    await hand_back(url, site_queue(prefix, "a"), times=LIMIT + 1)
    assert await eventually(lambda: _equals(depth(url, parked_queue(prefix)), 1))
    # More than RabbitMQ 4's default limit of 20, and more than our own.
    assert await hand_back(url, parked_queue(prefix), times=25) == 25
    assert await depth(url, parked_queue(prefix)) == 1


async def test_a_queue_declared_without_the_limits_is_refused_by_name_with_the_fix(settings):
    url, prefix = settings.broker.url, settings.broker.prefix
    name = site_queue(prefix, "b")
    connection = await aio_pika.connect(url)
    async with connection:
        # As an earlier version declared it.
        await (await connection.channel()).declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        with pytest.raises(TopologyMismatch) as refused:
            await declare(await connection.channel(), topology_from(settings))
    assert name in str(refused.value) and "inequivalent arg" in str(refused.value)
    assert f"rabbitmqctl delete_queue {name}" in str(refused.value)

    # A worker says so and stops with the exit code of a configuration error.
    env = relay_env(broker_url=url, prefix=prefix, store_url=settings.store.url)
    env["RELAY_BROKER__DELIVERY_LIMIT"] = str(LIMIT)
    worker = await asyncio.to_thread(run_relay, ["worker", "--site", "a", "--metrics-port", "0"], env=env)
    assert worker.returncode == 2
    assert f"relay: queue '{name}' exists with other arguments" in worker.stderr


async def test_the_recorder_holds_reports_while_the_store_is_away_instead_of_spending_deliveries(
    broker_cleanup, settings_factory, tmp_path: Path
):
    # The store's folder does not exist yet: every write fails as a store that is away does.
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'later' / 'relay.db'}"
    settings = settings_factory(broker={"delivery_limit": LIMIT}, store={"url": store_url})
    url, prefix = settings.broker.url, settings.broker.prefix
    await declared(settings)
    report = AttemptRecord(message_id="f" * 32, site="a", attempt=1, outcome=Outcome.ACCEPTED)
    await publish(settings, encode_events([report]), exchange=events_exchange(prefix))

    engine = make_engine(settings.store)
    connection = await connect(settings.broker)
    recorder = Recorder(sessions=make_sessionmaker(engine), prefix=prefix)
    await recorder.start(connection)
    await asyncio.sleep(3.5)  # more store retries than the delivery limit allows deliveries
    await recorder.close()  # gives the held report back: its one delivery is counted now

    redelivered = await _get(url, events_queue(prefix))
    assert redelivered is not None, "the report was parked or lost while the store was away"
    assert redelivered.headers.get("x-delivery-count") == 1
    assert await depth(url, parked_queue(prefix)) == 0

    # The store comes back: the report is folded.
    (tmp_path / "later").mkdir()
    await asyncio.to_thread(upgrade, settings.store)
    recorder = Recorder(sessions=make_sessionmaker(engine), prefix=prefix)
    await recorder.start(connection)
    try:
        folded = await eventually(lambda: _attempts(engine))
    finally:
        await recorder.close()
        await connection.close()
        await engine.dispose()
    assert folded == [report.message_id]


async def _get(url: str, name: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    connection = await aio_pika.connect(url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is not None:
            await message.nack(requeue=True)
        return message


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def _dead_letters(engine, *, expect: int) -> list[DeadLetter]:
    async with make_sessionmaker(engine)() as session:
        rows = list((await session.execute(select(DeadLetter))).scalars())
    return rows if len(rows) >= expect else []


async def _attempts(engine) -> list[str]:
    async with make_sessionmaker(engine)() as session:
        return list((await session.execute(select(Attempt.message_id))).scalars())
