"""The ingress's store repositories, store writer and recorders on a real PostgreSQL (the store several
ingress replicas share)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import replace

import asyncpg
import pytest
from sqlalchemy import select

from ingress.recorder import Recorder
from shared.broker import ConfirmedPublisher, connect
from shared.envelope import encode_dead, encode_events
from shared.model import AttemptRecord, DeadReason, DeliveryReport, Job, Outcome, ReportState, Status
from shared.settings import Settings, StoreSettings
from shared.store import idempotency
from shared.store.api_keys import create_key, revoke_key, tenant_of
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.messages import MessageView, get_message, insert_submitted, row_for_job
from shared.store.migrate import upgrade
from shared.store.models import DeadLetter, Message
from shared.store.recording import DeadReport, fold
from shared.store.report_rows import unmatched_count
from shared.topology import dead_exchange, dead_queue, declare, events_exchange, events_queue, topology_from
from tests.helpers import missing_service
from tests.ingress_helpers import queue_depth

pytestmark = pytest.mark.integration

SERVER = os.environ.get("RELAY_TEST_POSTGRES", "postgres@127.0.0.1:5432")


@pytest.fixture
async def pg_sessions():
    name = f"relay_ingress_{uuid.uuid4().hex[:8]}"
    try:
        admin = await asyncpg.connect(f"postgresql://{SERVER}/postgres", timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        missing_service(f"no PostgreSQL at {SERVER}: {exc!r}")
    await admin.execute(f'CREATE DATABASE "{name}"')
    settings = StoreSettings(url=f"postgresql+asyncpg://{SERVER}/{name}")
    engine = None
    try:
        await asyncio.to_thread(upgrade, settings)
        engine = make_engine(settings)
        yield make_sessionmaker(engine)
    finally:
        if engine is not None:
            await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_keys_rows_reports_and_idempotency_on_postgres(pg_sessions):
    sessions = pg_sessions
    key, info = await create_key(sessions, tenant="t")
    async with sessions() as session:
        assert await tenant_of(session, key) == "t"
    await revoke_key(sessions, info.prefix)
    async with sessions() as session:
        assert await tenant_of(session, key) is None

    now = time.time()
    job = Job(
        id="a" * 32, tenant="t", to="+31612345678", sender="S", body="b", accepted_at=now, expires_at=now + 60
    )
    early = AttemptRecord(
        message_id=job.id, site="a", attempt=1, outcome=Outcome.AMBIGUOUS, status=Status.RETRYING
    )
    async with sessions.begin() as session:
        await fold(session, events=[early], dead=[])
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job, site="a")])
    dead = DeadReport(job=job, site="a", reason=DeadReason.EXPIRED, detail="validity", attempts=1)
    for _ in range(2):
        async with sessions.begin() as session:
            await fold(session, events=[early], dead=[dead])
    async with sessions() as session:
        view = await get_message(session, message_id=job.id, tenant="t")
    assert view is not None
    assert (view.status, view.ambiguous, len(view.history), view.to_number) == ("expired", 1, 1, job.to)

    async with sessions.begin() as session:
        assert await idempotency.claim(
            session, tenant="t", key="k", request_hash="h", message_ids=["m"], ttl_s=60, lease_s=30
        )
        assert not await idempotency.claim(
            session, tenant="t", key="k", request_hash="h", message_ids=["m"], ttl_s=60, lease_s=30
        )
        await idempotency.complete(session, tenant="t", key="k", status_code=202, response={"id": "x"})
    async with sessions() as session:
        known = await idempotency.lookup(session, tenant="t", key="k", ttl_s=60)
    assert known is not None and known.response == {"id": "x"} and not known.pending


def _job(message_id: str, *, tenant: str = "t", sender: str = "S", body: str = "b") -> Job:
    now = time.time()
    return Job(
        id=message_id,
        tenant=tenant,
        to="+31612345678",
        sender=sender,
        body=body,
        accepted_at=now,
        expires_at=now + 60,
    )


async def test_a_row_postgres_refuses_does_not_fail_the_other_tenants_rows(pg_sessions):
    """A value too long for its column, or a NUL in a text, fails a whole PostgreSQL transaction: the
    other rows of the group commit are written as sent, the refused one cut to fit, and nothing waits."""
    from ingress.metrics import STORE_ROWS_REFUSED
    from ingress.store_writer import StoreWriter

    writer = StoreWriter(sessions=pg_sessions, batch_max=100)
    writer.start()
    before = STORE_ROWS_REFUSED.labels("fitted")._value.get()
    jobs = [_job(f"{n:032d}", tenant=f"tenant-{n % 3}") for n in range(9)]
    jobs[4] = replace(jobs[4], sender="+" + "1" * 24)  # wider than messages.sender
    jobs[7] = replace(jobs[7], body="a\x00b")  # PostgreSQL's text holds no NUL
    commits = [writer.add([row_for_job(j, site="a") for j in jobs[i : i + 3]]) for i in (0, 3, 6)]
    await asyncio.wait_for(asyncio.gather(*commits), 10)
    await writer.close()
    async with pg_sessions() as session:
        views = [await get_message(session, message_id=j.id, tenant=j.tenant) for j in jobs]
    assert all(view is not None for view in views)
    assert views[4] is not None and views[4].sender == "+" + "1" * 19
    assert [v.sender for i, v in enumerate(views) if v is not None and i != 4] == ["S"] * 8
    async with pg_sessions() as session:
        body = await session.scalar(select(Message.body).where(Message.id == jobs[7].id))
    assert body == "ab"
    assert STORE_ROWS_REFUSED.labels("fitted")._value.get() - before == 2
    assert writer.retry_backlog == 0


@contextlib.asynccontextmanager
async def recorders(sessions, broker_url: str, prefix: str, count: int):
    """`count` recorders, each as one ingress replica runs it, consuming the same queues."""
    settings = Settings(broker={"url": broker_url, "prefix": prefix})  # type: ignore[arg-type]
    connections = [await connect(settings.broker) for _ in range(count + 1)]
    started: list[Recorder] = []
    try:
        publisher = await ConfirmedPublisher.open(connections[0], confirm_timeout_s=5)
        await declare(publisher.channel, topology_from(settings))
        for connection in connections[1:]:
            recorder = Recorder(sessions=sessions, prefix=prefix)
            await recorder.start(connection)
            started.append(recorder)
        yield publisher, started
    finally:
        for recorder in started:
            await recorder.close()
        for connection in connections:
            await connection.close()


async def settled(fetch, done, timeout_s: float = 30.0):
    """What `fetch()` gives once `done` holds of it, or when `timeout_s` ran out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_two_recorders_folding_one_store_at_once_lose_nothing(
    pg_sessions, broker_url, prefix, broker_cleanup
):
    """Two ingress replicas fold interleaved, out-of-order and redelivered reports of the same messages:
    every message ends delivered, with its highest attempt and every possible duplicate counted once."""
    jobs = [_job(f"{n:032d}") for n in range(150)]
    async with pg_sessions.begin() as session:
        await insert_submitted(session, [row_for_job(j, site="a") for j in jobs])
    t0 = time.time()
    records: list[AttemptRecord] = []
    for j in jobs:
        first = AttemptRecord(
            message_id=j.id, site="a", attempt=1, outcome=Outcome.AMBIGUOUS, at=t0, status=Status.RETRYING
        )
        second = replace(first, attempt=2, outcome=Outcome.UNAVAILABLE, at=t0 + 1, possible_duplicate=True)
        third = replace(first, site="b", attempt=3, outcome=Outcome.ACCEPTED, at=t0 + 2, status=Status.SENT)
        records += [first, second, third, first]  # the last one a redelivery
    random.Random(7).shuffle(records)
    async with recorders(pg_sessions, broker_url, prefix, 2) as (publisher, started):
        exchange = events_exchange(prefix)
        await asyncio.gather(
            *(
                publisher.publish(encode_events(records[i : i + 2]), exchange=exchange, routing_key="")
                for i in range(0, len(records), 2)
            )
        )

        async def summary() -> Counter[tuple[str, int, int, int]]:
            async with pg_sessions() as session:
                views = [await get_message(session, message_id=j.id, tenant="t") for j in jobs]
            return Counter(
                (v.status, v.attempts, v.ambiguous, len(v.history)) for v in views if v is not None
            )

        final = {("sent", 3, 2, 3): len(jobs)}
        assert await settled(summary, lambda found: found == final) == final
        assert all(recorder.batches > 0 for recorder in started), "both replicas took a share"
    assert await queue_depth(broker_url, events_queue(prefix)) == 0


async def test_reports_postgres_refuses_are_kept_cut_to_fit(pg_sessions, broker_url, prefix, broker_cleanup):
    """A dead letter whose job does not fit the messages columns, and an event whose platform answer
    holds a NUL: each stored cut to fit, the whole job kept in the dead letter, nothing dropped."""
    from ingress.metrics import RECORDER_REFUSED

    ok, odd, wide = _job("a" * 32), _job("b" * 32), _job("c" * 32, sender="S" * 30)
    async with pg_sessions.begin() as session:
        await insert_submitted(session, [row_for_job(j, site="a") for j in (ok, odd)])
    fitted_before = {
        kind: RECORDER_REFUSED.labels(kind, "fitted")._value.get() for kind in ("events", "dead")
    }
    delivered = AttemptRecord(
        message_id=ok.id, site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT
    )
    nul = replace(delivered, message_id=odd.id, outcome=Outcome.REJECTED, detail="bad\x00number", status=None)
    async with recorders(pg_sessions, broker_url, prefix, 1) as (publisher, _):
        dead = encode_dead(wide, site="a", reason=DeadReason.REJECTED, detail="no route", attempts=1)
        await publisher.publish(dead, exchange=dead_exchange(prefix), routing_key="")
        for report in ([nul], [delivered]):
            await publisher.publish(encode_events(report), exchange=events_exchange(prefix), routing_key="")

        async def views() -> dict[str, MessageView | None]:
            async with pg_sessions() as session:
                return {
                    j.id: await get_message(session, message_id=j.id, tenant="t") for j in (ok, odd, wide)
                }

        found = await settled(
            views,
            lambda v: all(v.values()) and v[ok.id].history and v[odd.id].history and v[wide.id].attempts,
        )
        for queue in (events_queue(prefix), dead_queue(prefix)):
            assert await queue_depth(broker_url, queue) == 0
    async with pg_sessions() as session:
        letter = await session.get(DeadLetter, wide.id)
    delivered_view, odd_view, wide_view = (found[j.id] for j in (ok, odd, wide))
    assert delivered_view is not None and delivered_view.status == "sent"
    assert odd_view is not None and odd_view.history[0].detail == "badnumber"
    assert wide_view is not None and (wide_view.status, wide_view.sender) == ("rejected", "S" * 20)
    assert letter is not None and letter.job["sender"] == "S" * 30
    for kind in ("events", "dead"):
        assert RECORDER_REFUSED.labels(kind, "fitted")._value.get() - fitted_before[kind] == 1


async def test_delivery_reports_fold_on_postgres_once_each_and_only_upwards(pg_sessions):
    """The reports insert and the ranked status update on PostgreSQL: a report repeated is kept once,
    a late `sent` does not hide `delivered`, a report naming no message is kept unmatched."""
    job = _job("d" * 32)
    delivered = DeliveryReport(
        site="a",
        platform="smpp",
        message_id=job.id,
        attempt=1,
        state=ReportState.DELIVERED,
        raw="stat:DELIVRD",
    )
    stray = replace(delivered, message_id="", raw="id:ffff stat:DELIVRD")
    late = AttemptRecord(message_id=job.id, site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT)
    async with pg_sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job, site="a")])
    async with pg_sessions.begin() as session:
        first = await fold(session, events=[], dead=[], reports=[delivered, stray])
    async with pg_sessions.begin() as session:
        again = await fold(session, events=[late], dead=[], reports=[delivered])
    async with pg_sessions() as session:
        view = await get_message(session, message_id=job.id, tenant="t")
        unmatched = await unmatched_count(session)
    assert (first.reports_added, first.reports_unmatched) == (2, 1)
    assert (again.reports_added, again.reports_seen_before) == (0, 1)
    assert view is not None and view.status == "delivered" and len(view.reports) == 1
    assert unmatched == 1
