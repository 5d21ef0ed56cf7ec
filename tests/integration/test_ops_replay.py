"""The replay's claim/publish/undo order, in process, against a real SQLite store and the real broker."""

from __future__ import annotations

import pytest

from ops.replay import Replayer, ReplayResult
from shared.broker import ConfirmedPublisher, connect
from shared.broker_settings import BrokerSettings
from shared.settings import StoreSettings
from shared.store import dead_letters
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.models import DeadLetter
from tests.integration.ops_support import dead_row, fetch_dead, fetch_message, insert, make_job, message_row

pytestmark = pytest.mark.integration


async def test_a_failed_publish_undoes_the_claim(broker_url: str, prefix: str, store_url: str) -> None:
    job = make_job(expires_in_s=-30)
    await insert(store_url, [dead_row(job, reason="expired"), message_row(job, status="expired")])
    before = await fetch_message(store_url, job.id)
    assert before is not None

    connection = await connect(BrokerSettings(url=broker_url, prefix=prefix))
    engine = make_engine(StoreSettings(url=store_url))
    try:
        publisher = await ConfirmedPublisher.open(connection, confirm_timeout_s=2)
        await publisher.channel.close()  # the broker is gone by the time the replay publishes
        sessions = make_sessionmaker(engine)
        async with sessions() as session:
            row = await session.get(DeadLetter, job.id)
        assert row is not None
        result = ReplayResult()
        replayer = Replayer(
            sessions=sessions,
            publisher=publisher,
            prefix=prefix,
            to_site=None,
            known_sites=frozenset({"a", "b"}),
            force=False,
            default_validity_s=60,
        )
        await replayer.replay([row], result)
    finally:
        await engine.dispose()
        await connection.close()

    assert result.replayed == [] and [mid for mid, _ in result.failed] == [job.id]
    dead = await fetch_dead(store_url, job.id)
    assert dead is not None
    assert (dead.replayed_at, dead.replay_count, dead.replayed_to_site) == (None, 0, None)
    after = await fetch_message(store_url, job.id)
    assert after is not None
    assert (after.status, after.expires_at) == ("expired", before.expires_at)


async def test_only_one_of_two_concurrent_claims_wins(store_url: str) -> None:
    job = make_job()
    await insert(store_url, [dead_row(job)])
    engine = make_engine(StoreSettings(url=store_url))
    try:
        sessions = make_sessionmaker(engine)
        async with sessions() as session:
            seen_by_first = await session.get(DeadLetter, job.id)
        async with sessions() as session:
            seen_by_second = await session.get(DeadLetter, job.id)
        assert seen_by_first is not None and seen_by_second is not None
        async with sessions.begin() as session:
            first = await dead_letters.claim(session, [seen_by_first], to_site=None, force=False)
        # The second operator read the row before the first claimed it; even --force must not double it.
        async with sessions.begin() as session:
            second = await dead_letters.claim(session, [seen_by_second], to_site="b", force=True)
    finally:
        await engine.dispose()
    assert [c.message_id for c in first] == [job.id] and second == []
    dead = await fetch_dead(store_url, job.id)
    assert dead is not None and (dead.replay_count, dead.replayed_to_site) == (1, "a")
