"""Shared by the operator-tooling tests: rows written straight into a migrated store, and `relay` runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from ops import cli
from shared.model import Job
from shared.settings import StoreSettings
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.models import Attempt, DeadLetter, Message
from tests.helpers import RELAY, SITES_ENV, missing_service


def make_job(*, tenant: str = "acme", expires_in_s: float = 3600.0, to: str = "+31612345678") -> Job:
    now = time.time()
    return Job(
        id=uuid.uuid4().hex,
        tenant=tenant,
        to=to,
        sender="Bank",
        body="Your code is 123456",
        reference="client-ref",
        accepted_at=now - 60,
        expires_at=now + expires_in_s,
    )


def dead_row(
    job: Job,
    *,
    site: str = "a",
    reason: str = "rejected",
    detail: str = "invalid number",
    attempts: int = 1,
    dead_ago: timedelta = timedelta(minutes=5),
) -> DeadLetter:
    return DeadLetter(
        message_id=job.id,
        tenant=job.tenant,
        site=site,
        reason=reason,
        detail=detail,
        attempts=attempts,
        job=asdict(job),
        dead_at=datetime.now(UTC) - dead_ago,
        replay_count=0,
    )


def message_row(job: Job, *, site: str = "a", status: str = "rejected") -> Message:
    return Message(
        id=job.id,
        tenant=job.tenant,
        to_number=job.to,
        sender=job.sender,
        body=job.body,
        client_reference=job.reference,
        site=site,
        status=status,
        attempts=1,
        accepted_at=datetime.fromtimestamp(job.accepted_at, UTC),
        expires_at=datetime.fromtimestamp(job.expires_at, UTC),
    )


def attempt_row(job: Job, *, site: str, attempt: int, outcome: str, detail: str, ago_s: float) -> Attempt:
    return Attempt(
        message_id=job.id,
        site=site,
        attempt=attempt,
        outcome=outcome,
        detail=detail,
        at=datetime.now(UTC) - timedelta(seconds=ago_s),
        latency_ms=12.5,
        worker="host:42",
    )


async def insert(store_url: str, rows: list[object]) -> None:
    engine = make_engine(StoreSettings(url=store_url))
    try:
        async with make_sessionmaker(engine).begin() as session:
            session.add_all(rows)
    finally:
        await engine.dispose()


async def fetch_dead(store_url: str, message_id: str) -> DeadLetter | None:
    engine = make_engine(StoreSettings(url=store_url))
    try:
        async with make_sessionmaker(engine)() as session:
            return await session.get(DeadLetter, message_id)
    finally:
        await engine.dispose()


async def fetch_message(store_url: str, message_id: str) -> Message | None:
    engine = make_engine(StoreSettings(url=store_url))
    try:
        async with make_sessionmaker(engine)() as session:
            return await session.get(Message, message_id)
    finally:
        await engine.dispose()


def relay_env(*, broker_url: str, prefix: str, store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_BROKER__URL=broker_url,
        RELAY_BROKER__PREFIX=prefix,
        RELAY_BROKER__CONNECT_TIMEOUT_S="3",
        RELAY_STORE__URL=store_url,
        RELAY_LOG__LEVEL="WARNING",
        RELAY_WORKER__HEARTBEAT_INTERVAL_S="0.5",
        # No ingress listens here: status must say "unknown" for the spool quickly.
        RELAY_INGRESS__PORT="1",
        **SITES_ENV,
    )
    return env


def run_relay(
    args: list[str], *, env: dict[str, str], timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RELAY, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def invoke_relay(args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`relay ARGS` in this process (much faster than a child), through the entry point's own `run`: every
    failure is one `relay: ...` line on stderr and its exit code. Commands run `asyncio.run`, so async tests
    call this through `asyncio.to_thread`."""
    overrides: dict[str, str | None] = {k: v for k, v in env.items() if k.startswith("RELAY_")}
    overrides.update({k: None for k in os.environ if k.startswith("RELAY_") and k not in overrides})
    with CliRunner().isolation(env=overrides) as (stdout, stderr, _):
        code = cli.run(args)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    return subprocess.CompletedProcess(["relay", *args], code, out, err)


POSTGRES_ADMIN_DSN = os.environ.get("RELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.asynccontextmanager
async def scratch_postgres() -> AsyncIterator[str]:
    """A store URL of a new, empty PostgreSQL database, dropped afterwards (with any open sessions)."""
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        missing_service(f"no PostgreSQL at {POSTGRES_ADMIN_DSN} ({exc!r})")
        raise AssertionError("unreachable") from exc
    name = f"relay_t_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    host_part = POSTGRES_ADMIN_DSN.removeprefix("postgresql://").rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{host_part}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
