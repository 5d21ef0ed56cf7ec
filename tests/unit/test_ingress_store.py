"""Store repositories on a real (migrated) SQLite file: folding reports, submit rows, idempotency keys."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status
from shared.settings import StoreSettings
from shared.store import idempotency
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.messages import get_message, insert_submitted, row_for_job
from shared.store.models import IdempotencyKey, utcnow
from shared.store.recording import DeadReport, fold, promoted


@pytest.fixture
async def sessions(store_url):
    engine = make_engine(StoreSettings(url=store_url))
    yield make_sessionmaker(engine)
    await engine.dispose()


def job(message_id: str = "m1") -> Job:
    now = time.time()
    return Job(
        id=message_id,
        tenant="t",
        to="+31612345678",
        sender="S",
        body="b",
        accepted_at=now,
        expires_at=now + 60,
    )


def test_status_only_moves_up() -> None:
    assert promoted("accepted", Status.RETRYING) and promoted("retrying", Status.DEAD)
    assert promoted("dead", Status.SENT)  # a replayed dead letter that got through
    assert not promoted("sent", Status.RETRYING) and not promoted("sent", Status.DEAD)
    assert not promoted("rejected", Status.EXPIRED) and not promoted("retrying", Status.RETRYING)


async def test_an_event_before_the_submit_row_keeps_its_status(sessions):
    early = AttemptRecord(message_id="m1", site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT)
    async with sessions.begin() as session:
        result = await fold(session, events=[early], dead=[])
    assert result.placeholders == 1
    async with sessions() as session:
        assert await get_message(session, message_id="m1", tenant="t") is None  # nobody's yet
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    async with sessions() as session:
        view = await get_message(session, message_id="m1", tenant="t")
    assert view is not None and view.status == "sent" and view.to_number == "+31612345678"
    assert view.attempts == 1 and len(view.history) == 1


async def test_fold_is_idempotent_and_dead_letters_once(sessions):
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    records = [
        AttemptRecord(
            message_id="m1", site="a", attempt=1, outcome=Outcome.AMBIGUOUS, at=1000.0, status=Status.RETRYING
        ),
        AttemptRecord(
            message_id="m1", site="b", attempt=2, outcome=Outcome.REJECTED, at=1001.0, status=Status.REJECTED
        ),
    ]
    dead = DeadReport(job=job(), site="b", reason=DeadReason.REJECTED, detail="no", attempts=2)
    for _ in range(2):
        async with sessions.begin() as session:
            await fold(session, events=records, dead=[dead])
    async with sessions() as session:
        view = await get_message(session, message_id="m1", tenant="t")
    assert view is not None
    assert (view.status, view.attempts, view.ambiguous, len(view.history)) == ("rejected", 2, 1, 2)
    assert view.history[0].possible_duplicate and not view.history[1].possible_duplicate


async def test_idempotency_claim_answer_and_expiry(sessions):
    async with sessions.begin() as session:
        assert await idempotency.claim(
            session, tenant="t", key="k", request_hash="h1", message_ids=["m"], ttl_s=60, lease_s=30
        )
        assert not await idempotency.claim(
            session, tenant="t", key="k", request_hash="h2", message_ids=["m"], ttl_s=60, lease_s=30
        )
        await idempotency.complete(session, tenant="t", key="k", status_code=202, response={"id": "x"})
    async with sessions() as session:
        known = await idempotency.lookup(session, tenant="t", key="k", ttl_s=60)
    assert known is not None and not known.pending and known.response == {"id": "x"}
    async with sessions.begin() as session:
        await session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(seconds=120)))
    async with sessions.begin() as session:
        assert await idempotency.lookup(session, tenant="t", key="k", ttl_s=60) is None
        assert await idempotency.claim(
            session, tenant="t", key="k", request_hash="h3", message_ids=["m"], ttl_s=60, lease_s=30
        )
        await idempotency.release(session, tenant="t", key="k")
        assert await idempotency.lookup(session, tenant="t", key="k", ttl_s=60) is None


async def test_the_sqlite_writer_thread_stores_rows_as_sqlalchemy_does(sessions, store_url):
    from sqlalchemy import text

    from shared.store.engine import make_sync_sqlite_engine
    from shared.store.messages import insert_submitted_sync

    # Microseconds of zero and of six digits: the stored text must match SQLAlchemy's in both.
    moment = 1_795_686_066.0
    first = dataclasses.replace(job("m1"), accepted_at=moment, expires_at=moment + 0.123456)
    second = dataclasses.replace(first, id="m2")
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(first, site="a")])
    engine = make_sync_sqlite_engine(store_url)
    assert engine is not None
    with engine.begin() as connection:
        insert_submitted_sync(connection, [row_for_job(second, site="a")])
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT accepted_at, updated_at, expires_at, status FROM messages ORDER BY id")
        ).all()
    engine.dispose()
    assert stored[0] == stored[1]
    async with sessions() as session:
        view = await get_message(session, message_id="m2", tenant="t")
    assert view is not None and view.expires_at.timestamp() == pytest.approx(moment + 0.123456)


class PausedAfterFirstStatement:
    """A session that stops after its first statement until `go` is set: another fold runs meanwhile."""

    def __init__(self, session, go: asyncio.Event) -> None:
        self._session = session
        self._go = go
        self._paused = False

    def get_bind(self):
        return self._session.get_bind()

    async def execute(self, *args, **kwargs):
        result = await self._session.execute(*args, **kwargs)
        if not self._paused:
            self._paused = True
            await self._go.wait()
        return result


async def test_interleaved_folds_neither_lower_a_status_nor_lose_a_count(store_url):
    """Two recorders (ingress replicas) fold reports of one message at once: the one that read first
    must not write back what it read, over what the other wrote meanwhile."""
    engines = [make_engine(StoreSettings(url=store_url)) for _ in range(2)]
    first, second = (make_sessionmaker(engine) for engine in engines)
    async with first.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    retrying = AttemptRecord(
        message_id="m1", site="a", attempt=1, outcome=Outcome.AMBIGUOUS, at=1000.0, status=Status.RETRYING
    )
    delivered = AttemptRecord(
        message_id="m1", site="b", attempt=2, outcome=Outcome.ACCEPTED, at=1001.0, status=Status.SENT
    )
    go = asyncio.Event()

    async def slow_fold() -> None:
        async with first.begin() as session:
            await fold(PausedAfterFirstStatement(session, go), events=[retrying], dead=[])

    slow = asyncio.create_task(slow_fold())
    await asyncio.sleep(0.1)
    async with second.begin() as session:
        await fold(session, events=[delivered, replace(delivered, attempt=3, at=1002.0)], dead=[])
    go.set()
    await slow
    async with first() as session:
        view = await get_message(session, message_id="m1", tenant="t")
    for engine in engines:
        await engine.dispose()
    assert view is not None
    assert (view.status, view.attempts, view.ambiguous, len(view.history)) == ("sent", 3, 1, 3)


async def test_out_of_order_reports_only_move_a_status_up(sessions):
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    first = AttemptRecord(
        message_id="m1", site="a", attempt=1, outcome=Outcome.AMBIGUOUS, at=1000.0, status=Status.RETRYING
    )
    second = replace(first, attempt=2, at=1001.0, outcome=Outcome.UNAVAILABLE, possible_duplicate=True)
    last = replace(first, site="b", attempt=3, at=1002.0, outcome=Outcome.ACCEPTED, status=Status.SENT)
    gave_up = DeadReport(job=job(), site="a", reason=DeadReason.ATTEMPTS_EXHAUSTED, detail="503", attempts=2)
    for events, dead in (([last], []), ([second], [gave_up]), ([first, last], []), ([first], [])):
        async with sessions.begin() as session:
            await fold(session, events=events, dead=dead)
        async with sessions() as session:
            view = await get_message(session, message_id="m1", tenant="t")
        assert view is not None and view.status == "sent"
    assert (view.attempts, view.ambiguous, len(view.history)) == (3, 2, 3)
    rejected = DeadReport(job=job("m2"), site="a", reason=DeadReason.REJECTED, detail="no", attempts=1)
    async with sessions.begin() as session:
        await fold(session, events=[], dead=[rejected])
    async with sessions.begin() as session:
        await fold(session, events=[replace(first, message_id="m2")], dead=[])
    async with sessions() as session:
        view = await get_message(session, message_id="m2", tenant="t")
    assert view is not None and (view.status, view.attempts, view.to_number) == ("rejected", 1, job().to)


async def test_an_event_carrying_its_job_makes_the_whole_row(sessions):
    """The submit's row was lost (an ingress killed before its group commit): the worker's report brings
    the job, and the message shows in full to its tenant."""
    lost = job("m1")
    bare = AttemptRecord(message_id="m1", site="b", attempt=1, outcome=Outcome.UNAVAILABLE, at=1000.0)
    async with sessions.begin() as session:
        await fold(session, events=[bare], dead=[])  # a report without the job: a placeholder
    delivered = replace(bare, attempt=2, outcome=Outcome.ACCEPTED, status=Status.SENT, job=lost)
    async with sessions.begin() as session:
        await fold(session, events=[delivered], dead=[])
    fresh = replace(delivered, message_id="m2", job=replace(lost, id="m2"))
    async with sessions.begin() as session:
        await fold(session, events=[fresh], dead=[])
    async with sessions() as session:
        views = [await get_message(session, message_id=m, tenant="t") for m in ("m1", "m2")]
    for view in views:
        assert view is not None and view.status == "sent"
        assert (view.to_number, view.sender, view.site) == (lost.to, lost.sender, "b")
        assert view.expires_at.timestamp() == pytest.approx(lost.expires_at)


async def test_a_row_the_store_refuses_is_written_cut_to_fit_and_the_others_as_they_are(store_url):
    from ingress.metrics import STORE_ROWS_REFUSED
    from ingress.store_writer import StoreWriter
    from shared.store.engine import make_sync_sqlite_engine

    engine = make_engine(StoreSettings(url=store_url))
    writer = StoreWriter(
        sessions=make_sessionmaker(engine), batch_max=100, sync_engine=make_sync_sqlite_engine(store_url)
    )
    writer.start()
    before = STORE_ROWS_REFUSED.labels("fitted")._value.get()
    rows = [row_for_job(replace(job(f"m{n}"), tenant=f"t{n % 3}"), site="a") for n in range(9)]
    rows[4]["sender"] = None  # a value the store refuses (NOT NULL): the other tenants' rows must not care
    commits = [writer.add(rows[:3]), writer.add(rows[3:6]), writer.add(rows[6:])]
    await asyncio.wait_for(asyncio.gather(*commits), 10)
    async with make_sessionmaker(engine)() as session:
        views = [await get_message(session, message_id=f"m{n}", tenant=f"t{n % 3}") for n in range(9)]
    await writer.close()
    await engine.dispose()
    assert all(view is not None for view in views)
    assert [v.sender for v in views if v is not None] == ["S"] * 4 + [""] + ["S"] * 4
    assert writer.retry_backlog == 0
    assert STORE_ROWS_REFUSED.labels("fitted")._value.get() - before == 1


async def test_rows_waiting_for_the_store_are_bounded_and_none_is_lost(store_url, monkeypatch):
    """With the store's write lock held elsewhere, submits fill the queue to its bound, then wait for
    room; those that stop waiting leave their rows with the ones kept for retry; all land afterwards."""
    import sqlite3

    from ingress import store_writer
    from ingress.store_writer import StoreWriter
    from shared.store.engine import make_sync_sqlite_engine

    engine = make_engine(StoreSettings(url=store_url))
    writer = StoreWriter(
        sessions=make_sessionmaker(engine),
        batch_max=4,
        sync_engine=make_sync_sqlite_engine(store_url),
        queue_rows_max=8,
    )
    writer.start()
    blocker = sqlite3.connect(store_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the store is slow: every write waits for this lock
    try:
        commits = []
        for n in range(30):
            commits.append(writer.add([row_for_job(job(f"m{n}"), site="a")]))
            await asyncio.sleep(0)
            assert writer.pending_rows <= 8
        await asyncio.sleep(0.2)
        assert writer.pending_rows == 8 and not any(c.done() for c in commits)
        for waiting in commits[8:20]:  # their submits answered without the row (ingress.store_wait_s)
            waiting.cancel()
        await asyncio.sleep(0)
        assert writer.retry_backlog == 12 and writer.pending_rows == 8
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    monkeypatch.setattr(store_writer, "RETRY_INTERVAL_S", 0.1)
    await asyncio.wait_for(asyncio.gather(*commits[:8], *commits[20:]), 30)
    for _ in range(100):
        if writer.retry_backlog == 0:
            break
        await asyncio.sleep(0.05)
    async with make_sessionmaker(engine)() as session:
        found = [await get_message(session, message_id=f"m{n}", tenant="t") for n in range(30)]
    await writer.close()
    await engine.dispose()
    assert all(view is not None for view in found)


def test_the_migrations_make_the_models_tables(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from shared.store.models import Base

    engine = create_engine(store_url.replace("+aiosqlite", ""))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
