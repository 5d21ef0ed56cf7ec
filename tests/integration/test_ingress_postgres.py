"""The ingress's store repositories on a real PostgreSQL (the store several ingress replicas share)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import pytest

from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status
from shared.settings import StoreSettings
from shared.store import idempotency
from shared.store.api_keys import create_key, revoke_key, tenant_of
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.messages import get_message, insert_submitted, row_for_job
from shared.store.migrate import upgrade
from shared.store.recording import DeadReport, fold
from tests.helpers import missing_service

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
