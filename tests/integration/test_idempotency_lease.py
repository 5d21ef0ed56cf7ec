"""A stuck Idempotency-Key claim (its request's process died between claim and answer) on the real store,
SQLite and PostgreSQL: a repeat gets 409 only until the claim's lease ends, then goes on under the
message ids the first request was given, so what the first may have published and the repeat's copy are
one message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.idempotency import Answer, IdempotencyConflict, IdempotencyGuard, request_hash
from shared.envelope import H_POSSIBLE_DUPLICATE
from shared.model import new_message_ids
from shared.settings import StoreSettings
from shared.store import idempotency as repo
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade
from shared.store.models import IdempotencyKey, utcnow
from shared.topology import site_queue
from tests.ingress_helpers import api_for, drain, sms
from tests.integration.ops_support import scratch_postgres

pytestmark = pytest.mark.integration

LEASE_S = 1.0
TTL_S = 3600
DIGEST = "d" * 64


@contextlib.asynccontextmanager
async def migrated_postgres() -> AsyncIterator[str]:
    async with scratch_postgres() as url:
        await asyncio.to_thread(upgrade, StoreSettings(url=url))
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with migrated_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store_url(request: pytest.FixtureRequest, store_url: str) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield store_url
        return
    async with migrated_postgres() as url:
        yield url


@pytest.fixture
async def sessions(any_store_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(StoreSettings(url=any_store_url))
    yield make_sessionmaker(engine)
    await engine.dispose()


def guard(sessions: async_sessionmaker[AsyncSession], *, wait_s: float = 0.3) -> IdempotencyGuard:
    """A guard as another ingress process has one: its own, sharing only the store."""
    return IdempotencyGuard(sessions=sessions, ttl_s=TTL_S, lease_s=LEASE_S, other_process_wait_s=wait_s)


async def claimed_by_a_process_that_died(
    sessions: async_sessionmaker[AsyncSession], key: str, *, digest: str = DIGEST, tenant: str = "t"
) -> list[str]:
    """The claim a request makes before it publishes, left behind as its process died."""
    async with sessions.begin() as session:
        claim = await repo.claim(
            session,
            tenant=tenant,
            key=key,
            request_hash=digest,
            message_ids=new_message_ids(1),
            ttl_s=TTL_S,
            lease_s=LEASE_S,
        )
    assert claim is not None and not claim.resumed
    return claim.message_ids


class Producer:
    """Stands for the submit: records the ids it was told to publish under."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.resent: list[bool] = []

    async def __call__(self, message_ids: list[str], resent: bool) -> Answer:
        self.calls.append(message_ids)
        self.resent.append(resent)
        await asyncio.sleep(0.05)
        return Answer(status_code=202, body={"id": message_ids[0], "status": "accepted"})


async def test_a_stuck_claim_blocks_repeats_only_for_its_lease_then_they_reuse_its_message_ids(sessions):
    first_ids = await claimed_by_a_process_that_died(sessions, "k-1")
    produce = Producer()
    with pytest.raises(IdempotencyConflict, match="still being processed"):
        await guard(sessions).run(tenant="t", key="k-1", digest=DIGEST, message_count=1, produce=produce)
    assert produce.calls == []

    await asyncio.sleep(LEASE_S + 0.1)
    answer = await guard(sessions).run(tenant="t", key="k-1", digest=DIGEST, message_count=1, produce=produce)
    assert produce.calls == [first_ids]
    assert produce.resent == [True]  # the first request may have published them: marked
    assert answer.status_code == 202 and answer.body["id"] == first_ids[0] and not answer.replayed

    again = await guard(sessions).run(tenant="t", key="k-1", digest=DIGEST, message_count=1, produce=produce)
    assert again.replayed and again.body == answer.body and len(produce.calls) == 1
    # Another request under the key is refused, before and after the lease alike.
    with pytest.raises(IdempotencyConflict, match="different request"):
        await guard(sessions).run(tenant="t", key="k-1", digest="e" * 64, message_count=1, produce=produce)


async def test_a_running_request_keeps_its_claim_past_the_lease_and_a_dead_ones_is_taken_within_the_wait(
    sessions,
):
    """The lease is renewed while the request runs: a slow live one is waited for, not taken over; a
    repeat of one whose process died is answered within its wait, not refused."""
    slow_ids: list[list[str]] = []

    async def slow(message_ids: list[str], resent: bool) -> Answer:
        slow_ids.append(message_ids)
        await asyncio.sleep(3 * LEASE_S)
        return Answer(status_code=202, body={"id": message_ids[0], "status": "accepted"})

    first = asyncio.create_task(
        guard(sessions).run(tenant="t", key="k-7", digest=DIGEST, message_count=1, produce=slow)
    )
    await asyncio.sleep(0.2)
    produce = Producer()
    repeat = await guard(sessions, wait_s=5 * LEASE_S).run(
        tenant="t", key="k-7", digest=DIGEST, message_count=1, produce=produce
    )
    assert produce.calls == [] and repeat.replayed
    assert (await first).body == repeat.body == {"id": slow_ids[0][0], "status": "accepted"}

    died_ids = await claimed_by_a_process_that_died(sessions, "k-8")
    answer = await guard(sessions, wait_s=LEASE_S + 0.5).run(
        tenant="t", key="k-8", digest=DIGEST, message_count=1, produce=produce
    )
    assert produce.calls == [died_ids] and answer.body["id"] == died_ids[0]


async def test_only_a_repeat_of_the_same_request_takes_a_stuck_claim_over(sessions):
    await claimed_by_a_process_that_died(sessions, "k-2")
    await asyncio.sleep(LEASE_S + 0.1)
    with pytest.raises(IdempotencyConflict, match="different request"):
        await guard(sessions).run(tenant="t", key="k-2", digest="e" * 64, message_count=1, produce=Producer())


async def test_a_request_that_failed_midway_lets_its_repeat_go_on_at_once_under_the_same_ids(sessions):
    seen: list[list[str]] = []

    async def fails(message_ids: list[str], resent: bool) -> Answer:
        seen.append(message_ids)
        raise RuntimeError("the spool's disk is full")

    with pytest.raises(RuntimeError):
        await guard(sessions).run(tenant="t", key="k-3", digest=DIGEST, message_count=3, produce=fails)
    produce = Producer()
    await guard(sessions).run(tenant="t", key="k-3", digest=DIGEST, message_count=3, produce=produce)
    assert produce.calls == seen and len(seen[0]) == 3


async def test_a_refused_request_frees_its_key_for_a_fixed_one(sessions):
    async def refused(message_ids: list[str], resent: bool) -> Answer:
        return Answer(status_code=422, body={"title": "invalid"})

    await guard(sessions).run(tenant="t", key="k-4", digest=DIGEST, message_count=1, produce=refused)
    produce = Producer()
    await guard(sessions).run(tenant="t", key="k-4", digest="e" * 64, message_count=1, produce=produce)
    assert len(produce.calls) == 1


async def test_a_stuck_claim_of_an_earlier_version_records_the_ids_of_the_repeat_that_takes_it_over(sessions):
    async with sessions.begin() as session:
        session.add(
            IdempotencyKey(
                tenant="t",
                key="k-6",
                request_hash=DIGEST,
                status_code=repo.PENDING,
                response={},
                created_at=utcnow(),
            )
        )
    await asyncio.sleep(LEASE_S + 0.1)
    mine = {"tenant": "t", "key": "k-6", "request_hash": DIGEST, "ttl_s": TTL_S, "lease_s": LEASE_S}
    async with sessions.begin() as session:
        claim = await repo.claim(session, message_ids=["m1"], **mine)
    assert claim == repo.Claim(message_ids=["m1"], resumed=True)
    await asyncio.sleep(LEASE_S + 0.1)
    async with sessions.begin() as session:
        assert await repo.claim(session, message_ids=["m2"], **mine) == repo.Claim(
            message_ids=["m1"], resumed=True
        )


async def test_of_two_replicas_repeating_after_the_lease_one_publishes(postgres_url):
    # Several ingress replicas share a PostgreSQL store (SQLite serves one ingress).
    engines = [make_engine(StoreSettings(url=postgres_url)) for _ in range(2)]
    first_ids = await claimed_by_a_process_that_died(make_sessionmaker(engines[0]), "k-5")
    await asyncio.sleep(LEASE_S + 0.1)
    produce = Producer()
    try:
        answers = await asyncio.gather(
            *(
                guard(make_sessionmaker(engine), wait_s=5).run(
                    tenant="t", key="k-5", digest=DIGEST, message_count=1, produce=produce
                )
                for engine in engines
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert produce.calls == [first_ids]
    assert sorted(a.replayed for a in answers) == [False, True]
    assert {a.body["id"] for a in answers} == {first_ids[0]}


async def test_the_api_answers_a_repeat_after_the_lease_with_the_id_the_first_request_was_given(
    broker_cleanup, settings_factory, store_url
):
    settings = settings_factory(
        ingress={"idempotency_lease_s": LEASE_S}, routing={"policy": "primary", "primary": "a"}
    )
    async with api_for(settings) as api:
        body = sms()
        first_ids = await claimed_by_a_process_that_died(
            api.ingress.sessions, "order-4711", digest=request_hash("/v1/messages", body), tenant="bank-a"
        )
        await asyncio.sleep(LEASE_S + 0.1)
        response = await api.submit(body, **{"Idempotency-Key": "order-4711"})
        assert response.status_code == 202, response.text
        assert response.json()["id"] == first_ids[0]
    queued = await drain(settings.broker.url, site_queue(settings.broker.prefix, "a"), expect=1, timeout_s=5)
    assert [q.job.id for q in queued] == first_ids
    # The dead process may have published it already: this copy says so, and its worker marks the attempt.
    assert [q.headers.get(H_POSSIBLE_DUPLICATE) for q in queued] == [True]
