"""The drop-in APIs with the real, unmodified clients: CM's Python SDK, the official twilio SDK, and Kannel
(a bearerbox whose SMSC is the relay, and Kannel's test_http) against the relay over real HTTP."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from cm_text import TextClient
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from shared.topology import site_queue
from tests.compat_helpers import TENANT, KannelClient, Served, served
from tests.ingress_helpers import drain

pytestmark = pytest.mark.integration

NUMBER = "+31612345678"


@pytest.fixture
async def relay(broker_cleanup, settings_factory, store_url):
    settings = settings_factory(routing={"policy": "primary", "primary": "a"})
    async with served(settings) as relay:
        yield relay


async def native_status(relay: Served, message_id: str) -> dict:
    async with httpx.AsyncClient(base_url=relay.url, timeout=10) as client:
        answer = await client.get(
            f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {relay.key}"}
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def queued(relay: Served, expect: int) -> list:
    settings = relay.settings
    return await drain(
        settings.broker.url, site_queue(settings.broker.prefix, "a"), expect=expect, timeout_s=5
    )


async def test_cm_sdk_single_multiple_bad_token_and_bad_number(relay):
    gateway = f"{relay.url}/v1.0/message"
    client = TextClient(apikey=relay.key, gateway=gateway)

    single = await asyncio.to_thread(
        client.SendSingleMessage, "Your code is 1", "MyBank", ["0031612345678"], "ref-1"
    )
    assert single.status_code == 200 and single.json()["errorCode"] == 0
    first = single.json()["messages"][0]
    assert first["status"] == "Accepted" and first["reference"] == "ref-1" and first["parts"] == 1

    client.AddMessage("Your code is 2", from_="MyBank", to=["0031612345679", "0031612345670"])
    client.AddMessage("Your code is 3", from_="MyBank", to=["0031612345671"], reference="ref-3")
    several = await asyncio.to_thread(client.send)
    assert several.status_code == 200 and several.json()["details"] == "Created 3 message(s)"

    bad_number = await asyncio.to_thread(client.SendSingleMessage, "Code", "MyBank", ["00316abc"])
    assert bad_number.status_code == 400
    assert bad_number.json()["messages"][0]["messageErrorCode"] == 303

    stranger = TextClient(apikey="00000000-0000-0000-0000-000000000000", gateway=gateway)
    refused = await asyncio.to_thread(stranger.SendSingleMessage, "Code", "MyBank", ["0031612345678"])
    assert refused.status_code == 400 and refused.json()["errorCode"] == 101

    view = await native_status(relay, first["id"])
    assert view["to"] == NUMBER and view["reference"] == "ref-1" and view["status"] == "accepted"
    jobs = await queued(relay, 4)
    assert sorted(q.job.body for q in jobs) == [
        "Your code is 1",
        "Your code is 2",
        "Your code is 2",
        "Your code is 3",
    ]
    assert {q.job.tenant for q in jobs} == {TENANT}


async def test_twilio_sdk_sends_fetches_and_handles_errors(relay):
    client = Client(relay.sid, relay.key)
    client.api.base_url = relay.url

    message = await asyncio.to_thread(
        client.messages.create, to=NUMBER, from_="MyBank", body="Hello from Twilio"
    )
    assert message.status == "queued" and message.sid.startswith("SM") and message.num_segments == "1"
    assert message.account_sid == relay.sid and message.date_created is not None

    fetched = await asyncio.to_thread(client.messages(message.sid).fetch)
    assert fetched.status == "queued" and fetched.body == "Hello from Twilio" and fetched.to == NUMBER
    assert (await native_status(relay, message.sid[2:]))["from"] == "MyBank"

    with pytest.raises(TwilioRestException) as invalid:
        await asyncio.to_thread(client.messages.create, to="+3161", from_="MyBank", body="x")
    assert invalid.value.status == 400 and invalid.value.code == 21211

    intruder = Client(relay.other_sid, relay.other_key)
    intruder.api.base_url = relay.url
    with pytest.raises(TwilioRestException) as hidden:
        await asyncio.to_thread(intruder.messages(message.sid).fetch)
    assert hidden.value.status == 404

    wrong = Client(relay.sid, relay.other_key)
    wrong.api.base_url = relay.url
    with pytest.raises(TwilioRestException) as unauthorized:
        await asyncio.to_thread(wrong.messages.create, to=NUMBER, from_="MyBank", body="x")
    assert unauthorized.value.status == 401 and unauthorized.value.code == 20003
    assert [q.job.body for q in await queued(relay, 1)] == ["Hello from Twilio"]


@pytest.mark.kannel
async def test_kannel_as_a_client_sends_through_the_relay(relay, kannel_binaries, tmp_path: Path):
    kannel = KannelClient(
        directory=tmp_path / "kannel",
        binaries=kannel_binaries,
        send_url=f"{relay.url}/cgi-bin/sendsms",
        username=TENANT,
        password=relay.key,
    )
    try:
        await asyncio.to_thread(kannel.start)
        texts = ["Short one", "caf\u00e9 \u20ac10", "L" * 300]
        for text in texts:
            answer = await asyncio.to_thread(
                kannel.sendsms, to=NUMBER, text=text, charset="UTF-8", **{"from": "Shop"}
            )
            assert answer.status_code == 202, answer.text
        unicode = await asyncio.to_thread(
            kannel.sendsms,
            to=NUMBER,
            text="\u043f\u0440\u0438\u0432\u0435\u0442",
            coding="2",
            charset="UTF-8",
            **{"from": "Shop"},
        )
        assert unicode.status_code == 202
        lines = await asyncio.to_thread(kannel.sent_log, 4)
        assert len(lines) == 4 and all(
            line.startswith(tuple("0123456789")) and "Sent SMS" in line for line in lines
        )
    finally:
        await asyncio.to_thread(kannel.close)
    jobs = await queued(relay, 4)
    bodies = sorted(q.job.body for q in jobs)
    assert bodies == sorted([*texts, "\u043f\u0440\u0438\u0432\u0435\u0442"])
    assert {(q.job.to, q.job.sender, q.job.tenant) for q in jobs} == {(NUMBER, "Shop", TENANT)}
    assert {q.job.body: q.job.segments for q in jobs}["L" * 300] == 2


def fetch_with_test_http(url: str) -> tuple[str, bytes]:
    """Kannel's test_http fetching `url`: the status line and the reply body (from its octet dump)."""
    done = subprocess.run(
        ["/usr/lib/kannel/test/test_http", "-v", "0", url], capture_output=True, text=True, timeout=30
    )
    output = done.stdout + done.stderr
    status = re.search(r"Status line: <(HTTP/1\.1 [^>]*)>", output)
    assert status is not None, output
    dump = output.split("Reply body:", 1)[1].split("Octet string dump ends.", 1)[0]
    body = bytes.fromhex("".join(re.findall(r"data: ((?:[0-9a-f]{2} )+)", dump)))
    return status.group(1), body


@pytest.mark.kannel
async def test_kannel_test_http_gets_kannels_answer(relay):
    query = f"username={TENANT}&password={relay.key}&to=%2B31612345678&from=Shop&text=hi"
    url = f"{relay.url}/cgi-bin/sendsms?{query}"
    assert await asyncio.to_thread(fetch_with_test_http, url) == (
        "HTTP/1.1 202 Accepted",
        b"0: Accepted for delivery",
    )
    refused = await asyncio.to_thread(fetch_with_test_http, url.replace(relay.key, "rk_wrong"))
    assert refused == ("HTTP/1.1 403 Forbidden", b"Authorization failed for sendsms")
    assert [q.job.body for q in await queued(relay, 1)] == ["hi"]
