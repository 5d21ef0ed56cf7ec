"""After a 202 the message shows in GET /v1/messages/{id}: within seconds under load, with the store
writer's queue bounded, and eventually even when the ingress is killed with its rows still pending."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from shared.store.models import Message
from tests.helpers import RELAY, free_port, spawned, wait_for_port
from tests.ingress_helpers import api_for, sms
from tests.integration.failover_harness import relay
from tests.integration.test_ingress_process import api_key

pytestmark = pytest.mark.integration

VISIBLE_WITHIN_S = 10.0


async def test_under_load_every_message_shows_within_seconds_and_the_queue_stays_bounded(
    broker_cleanup, settings_factory, store_url
):
    settings = settings_factory(store={"batch_max": 50}, routing={"policy": "primary", "primary": "a"})
    async with api_for(settings) as api:
        writer = api.ingress.store_writer
        bound = 4 * settings.store.batch_max
        most_pending = 0
        accepted: dict[str, float] = {}

        async def watch() -> None:
            nonlocal most_pending
            while True:
                most_pending = max(most_pending, writer.pending_rows)
                await asyncio.sleep(0)

        async def batch(n: int) -> None:
            body = {"messages": [sms(body=f"{n}-{i}") for i in range(100)]}
            response = await api.client.post("/v1/messages/batch", json=body, headers=api.auth())
            assert response.status_code in (200, 202, 207), response.text
            at = time.monotonic()
            accepted.update({r["id"]: at for r in response.json()["results"] if r["status"] == "accepted"})

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(batch(n) for n in range(20)))
            assert len(accepted) == 2000
            deadline = max(accepted.values()) + VISIBLE_WITHIN_S
            while time.monotonic() < deadline:
                async with api.ingress.sessions() as session:
                    stored = await session.scalar(
                        select(func.count()).select_from(Message).where(Message.id.in_(accepted))
                    )
                if stored == len(accepted):
                    break
                await asyncio.sleep(0.1)
            assert stored == len(accepted), (
                f"{len(accepted) - stored} not visible {VISIBLE_WITHIN_S} s after 202"
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        print(f"most rows pending at once: {most_pending} (bound {bound})")
        assert 0 < most_pending <= bound
        for message_id in list(accepted)[::200]:
            status = await api.client.get(f"/v1/messages/{message_id}", headers=api.auth())
            assert status.status_code == 200 and status.json()["status"] == "accepted"


def _ingress_env(tmp_path: Path, store_url: str, port: int) -> dict[str, str]:
    return {
        "RELAY_STORE__URL": store_url,
        "RELAY_INGRESS__SPOOL_PATH": str(tmp_path / "spool.db"),
        "RELAY_INGRESS__PORT": str(port),
        "RELAY_INGRESS__STORE_WAIT_S": "0.3",
        "RELAY_ROUTING__POLICY": "primary",
        "RELAY_ROUTING__PRIMARY": "a",
    }


async def test_rows_pending_when_the_ingress_is_killed_come_back_with_the_workers_reports(
    tmp_path, broker_url, prefix, broker_cleanup, store_url
):
    """The store is slow (its write lock held elsewhere): the ingress answers 202 without the rows, and
    is SIGKILLed with them pending. The messages are durable in the broker; a worker delivers them and
    reports with each job, so a new ingress's recorder writes their whole rows."""
    port = free_port()
    env = _ingress_env(tmp_path, store_url, port)
    bodies = [f"pending {n}" for n in range(5)]
    with relay(tmp_path, broker_url=broker_url, prefix=prefix) as r:
        ingress = [*RELAY, "--config", str(r.config), "ingress"]
        async with api_key(env) as key:
            headers = {"Authorization": f"Bearer {key}"}
            blocker = sqlite3.connect(store_url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with spawned(ingress, env=env, log=tmp_path / "ingress-1.log") as first:
                    await asyncio.to_thread(wait_for_port, port, timeout_s=30)
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}", headers=headers
                    ) as client:
                        ids = []
                        for body in bodies:
                            response = await client.post("/v1/messages", json=sms(body=body, reference=body))
                            assert response.status_code == 202, response.text
                            ids.append(response.json()["id"])
                        for message_id in ids:
                            assert (await client.get(f"/v1/messages/{message_id}")).status_code == 404
                    os.kill(first.pid, signal.SIGKILL)
                    first.wait(timeout=10)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            r.start_worker("a")
            with spawned(ingress, env=env, log=tmp_path / "ingress-2.log"):
                await asyncio.to_thread(wait_for_port, port, timeout_s=30)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                    views = [await _delivered(client, message_id) for message_id in ids]
    for view, body in zip(views, bodies, strict=True):
        assert view.get("status") == "sent", r.logs()
        assert (view["to"], view["from"], view["reference"]) == ("+31612345678", "MyBank", body)


async def _delivered(client: httpx.AsyncClient, message_id: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/messages/{message_id}")
        view = response.json() if response.status_code == 200 else {"http": response.status_code}
        if view.get("status") == "sent" or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.2)
