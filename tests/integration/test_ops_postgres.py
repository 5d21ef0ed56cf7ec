"""The store on the local PostgreSQL: `relay db upgrade` on a scratch database, then the dead-letter CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.integration.ops_support import (
    dead_row,
    fetch_dead,
    insert,
    invoke_relay,
    make_job,
    message_row,
    relay_env,
    run_relay,
    scratch_postgres,
)

pytestmark = pytest.mark.integration


async def relay(args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(invoke_relay, args, env=env)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with scratch_postgres() as url:
        yield url


async def test_upgrade_and_dead_letters_round_trip_on_postgres(
    postgres_url: str, broker_url: str, prefix: str, broker_cleanup: None
) -> None:
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=postgres_url)
    upgraded = run_relay(["db", "upgrade"], env=env)
    assert upgraded.returncode == 0, upgraded.stderr

    jobs = [make_job() for _ in range(3)]
    old = make_job(tenant="globex")
    await insert(
        postgres_url,
        [
            *(dead_row(j, dead_ago=timedelta(minutes=i + 1)) for i, j in enumerate(jobs)),
            *(message_row(j) for j in jobs),
            dead_row(old, site="b", reason="expired", dead_ago=timedelta(days=9)),
        ],
    )

    listed = await relay(["dead", "list", "--json", "--since", "1d"], env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [j.id for j in jobs]

    shown = await relay(["dead", "show", jobs[0].id, "--json"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["message"]["status"] == "rejected"

    replayed = await relay(["dead", "replay", jobs[0].id, "--to-site", "b"], env=env)
    assert replayed.returncode == 0, replayed.stderr
    dead = await fetch_dead(postgres_url, jobs[0].id)
    assert dead is not None and (dead.replay_count, dead.replayed_to_site) == (1, "b")
    assert dead.replayed_at is not None and dead.replayed_at.tzinfo is not None
    assert (await relay(["dead", "replay", jobs[0].id], env=env)).returncode == 2

    exported = await relay(["dead", "export", "--format", "csv"], env=env)
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.strip().splitlines()) == 1 + 4

    purged = await relay(["dead", "purge", "--older-than", "7d", "--yes"], env=env)
    assert purged.returncode == 0 and "deleted 1 dead letters" in purged.stdout
    assert await fetch_dead(postgres_url, old.id) is None

    status = await relay(["status", "--json"], env=env)
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    assert snap["store"] == "ok" and snap["dead_letters"] == {"total": 3, "by_reason": {"rejected": 3}}
