"""Messages sent through each drop-in API, with real processes (`relay ingress`, a worker, the platform
simulator rejecting everything): each becomes a dead letter that `relay dead` lists, `relay status` counts,
the native status API and Twilio's fetch show, and the metrics count per API."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from cm_text import TextClient
from twilio.rest import Client

from tests.helpers import RELAY, free_port, spawned, wait_for_port
from tests.integration.ops_support import invoke_relay, relay_env, run_relay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUMBER = "+31612345678"


async def wait_until(predicate, *, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def sent_with_each_api(url: str, sid: str, key: str) -> dict[str, str]:
    """One message through each API with its real client; the relay id of each."""
    cm = TextClient(apikey=key, gateway=f"{url}/v1.0/message").SendSingleMessage(
        "cm", "MyBank", ["0031612345678"]
    )
    assert cm.status_code == 200, cm.text
    twilio = Client(sid, key)
    twilio.api.base_url = url
    message = twilio.messages.create(to=NUMBER, from_="MyBank", body="twilio")
    kannel = httpx.get(
        f"{url}/cgi-bin/sendsms",
        params={"username": "bank", "password": key, "to": NUMBER, "from": "MyBank", "text": "kannel"},
    )
    assert (kannel.status_code, kannel.text) == (202, "0: Accepted for delivery")
    return {
        "cm": cm.json()["messages"][0]["id"],
        "twilio": message.sid[2:],
        "kannel": kannel.headers["x-relay-message-ids"],
    }


async def test_each_api_reaches_dead_letters_status_metrics_and_the_status_apis(
    tmp_path: Path, broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
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
    created = run_relay(["keys", "create", "--tenant", "bank"], env=env).stdout.strip().splitlines()
    sid_line = next(line for line in created if line.startswith("account SID: "))
    sid, key = sid_line.removeprefix("account SID: "), created[-1]
    assert re.fullmatch(r"AC[0-9a-f]{32}", sid) and key.startswith("rk_")
    url = f"http://127.0.0.1:{api_port}"
    sim_args = ["platform-sim", "--port", str(sim_port), "--admin-port", str(sim_admin)]
    with (
        spawned([*RELAY, *sim_args], env=env, log=tmp_path / "sim.log"),
        spawned([*RELAY, "ingress"], env=env, log=tmp_path / "ingress.log"),
        spawned(
            [*RELAY, "worker", "--site", "a", "--metrics-port", "0"], env=env, log=tmp_path / "worker.log"
        ),
    ):
        wait_for_port(sim_admin, timeout_s=60)
        wait_for_port(api_port, timeout_s=60)
        async with httpx.AsyncClient(timeout=5) as client:
            await client.post(f"http://127.0.0.1:{sim_admin}/faults", json={"mode": "reject", "share": 1.0})
            ids = await asyncio.to_thread(sent_with_each_api, url, sid, key)

            async def all_dead() -> bool:
                listed = await asyncio.to_thread(invoke_relay, ["dead", "list", "--json"], env=env)
                return {json.loads(line)["id"] for line in listed.stdout.splitlines()} == set(ids.values())

            await wait_until(all_dead, timeout_s=60, what="a dead letter from each API")
            status = json.loads((await asyncio.to_thread(invoke_relay, ["status", "--json"], env=env)).stdout)
            assert status["dead_letters"]["total"] == 3 and status["dead_letters"]["by_reason"] == {
                "rejected": 3
            }

            auth = {"Authorization": f"Bearer {key}"}
            for message_id in ids.values():
                view = (await client.get(f"{url}/v1/messages/{message_id}", headers=auth)).json()
                assert view["status"] == "rejected" and view["history"][0]["outcome"] == "rejected"
            twilio = Client(sid, key)
            twilio.api.base_url = url
            fetched = await asyncio.to_thread(twilio.messages(f"SM{ids['twilio']}").fetch)
            assert fetched.status == "failed" and fetched.error_code == 30008 and fetched.error_message

            metrics = (await client.get(f"{url}/metrics")).text
            for api in ("cm", "kannel", "twilio"):
                assert f'relay_ingress_api_submits_total{{api="{api}",result="queued"}} 1.0' in metrics
