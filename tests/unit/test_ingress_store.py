"""Store repositories on a real (migrated) SQLite file: folding reports, submit rows, idempotency keys."""

from __future__ import annotations

import dataclasses
import time
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
    assert promoted("dead", Status.DELIVERED)  # a replayed dead letter that got through
    assert not promoted("delivered", Status.RETRYING) and not promoted("delivered", Status.DEAD)
    assert not promoted("rejected", Status.EXPIRED) and not promoted("retrying", Status.RETRYING)


async def test_an_event_before_the_submit_row_keeps_its_status(sessions):
    early = AttemptRecord(
        message_id="m1", site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.DELIVERED
    )
    async with sessions.begin() as session:
        result = await fold(session, events=[early], dead=[])
    assert result.placeholders == 1
    async with sessions() as session:
        assert await get_message(session, message_id="m1", tenant="t") is None  # nobody's yet
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    async with sessions() as session:
        view = await get_message(session, message_id="m1", tenant="t")
    assert view is not None and view.status == "delivered" and view.to_number == "+31612345678"
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
