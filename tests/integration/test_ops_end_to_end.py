"""The whole dead-letter loop with real processes: a platform rejects, the worker dead-letters, the ingress's
recorder stores it, `relay dead list` shows it, and `relay dead replay` gets it delivered; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import RELAY, free_port, spawned, wait_for_port
from tests.integration.ops_support import fetch_message, invoke_relay, relay_env, run_relay, scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def wait_until(predicate, *, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store_url(request: pytest.FixtureRequest, store_url: str) -> AsyncIterator[str]:
    """The migrated SQLite file, or a scratch PostgreSQL database migrated by `relay db upgrade`."""
    if request.param == "sqlite":
        yield store_url
        return
    async with scratch_postgres() as url:
        upgraded = run_relay(["db", "upgrade"], env={**os.environ, "RELAY_STORE__URL": url})
        assert upgraded.returncode == 0, upgraded.stderr
        yield url


async def test_rejected_messages_are_listed_then_replayed_and_delivered(
    tmp_path: Path, broker_url: str, prefix: str, any_store_url: str, broker_cleanup: None
) -> None:
    store_url = any_store_url
    sim_port, sim_admin, api_port = free_port(), free_port(), free_port()
    env = {
        **relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url),
        "RELAY_INGRESS__PORT": str(api_port),
        "RELAY_INGRESS__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RELAY_ROUTING__POLICY": "primary",
        "RELAY_ROUTING__PRIMARY": "a",
        "RELAY_SITES__A__URL": f"http://127.0.0.1:{sim_port}/v1.0/message",
        "RELAY_SITES__B__URL": f"http://127.0.0.1:{free_port()}/v1.0/message",  # nothing listens
    }
    admin = f"http://127.0.0.1:{sim_admin}"
    sim_args = ["platform-sim", "--port", str(sim_port), "--admin-port", str(sim_admin)]
    with (
        spawned([*RELAY, *sim_args], env=env, log=tmp_path / "sim.log"),
        spawned([*RELAY, "ingress"], env=env, log=tmp_path / "ingress.log"),
        spawned(
            [*RELAY, "worker", "--site", "a", "--metrics-port", "0"], env=env, log=tmp_path / "worker.log"
        ),
    ):
        key = run_relay(["keys", "create", "--tenant", "bank"], env=env).stdout.strip().splitlines()[-1]
        # Generous: the machine running the tests may be busy; nothing here waits longer than needed.
        wait_for_port(sim_admin, timeout_s=60)
        wait_for_port(api_port, timeout_s=60)
        async with httpx.AsyncClient(timeout=5) as client:
            await client.post(f"{admin}/faults", json={"mode": "reject", "share": 1.0})
            ids = []
            for n in range(3):
                answer = await client.post(
                    f"http://127.0.0.1:{api_port}/v1/messages",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"to": f"+3161234567{n}", "from": "MyBank", "body": f"code {n}"},
                )
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])

            async def all_dead() -> bool:
                listed = await asyncio.to_thread(invoke_relay, ["dead", "list", "--json"], env=env)
                return {json.loads(line)["id"] for line in listed.stdout.splitlines()} == set(ids)

            await wait_until(all_dead, timeout_s=60, what="three dead letters in the store")
            shown = json.loads(
                (await asyncio.to_thread(invoke_relay, ["dead", "show", ids[0], "--json"], env=env)).stdout
            )
            assert shown["reason"] == "rejected" and shown["attempt_history"][0]["outcome"] == "rejected"

            await client.post(f"{admin}/faults", json={"mode": "none"})
            replayed = run_relay(["dead", "replay", "--all", "--reason", "rejected"], env=env)
            assert replayed.returncode == 0, replayed.stderr
            assert "replayed 3 (a 3)" in replayed.stdout

            async def all_delivered() -> bool:
                statuses = [await fetch_message(store_url, mid) for mid in ids]
                return all(m is not None and m.status == "sent" for m in statuses)

            await wait_until(all_delivered, timeout_s=60, what="the replayed messages to be delivered")
            references = (await client.get(f"{admin}/references")).json()["references"]
            assert set(ids) <= set(references)
