"""The Jasmin adapter (HTTP API) and the SMPP adapter (Jasmin's SMPP server) against a real Jasmin 0.11.1
whose route ends at the simulated SMSC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from ops.harness.jasmin import PASSWORD, USERNAME, JasminInstance
from ops.harness.smsc import RunningSmsc
from shared.model import Job, Outcome, new_message_id
from workers.platforms.base import Result
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.smpp import SmppPlatform
from workers.platforms.smpp_link import SmppLink

pytestmark = [pytest.mark.integration, pytest.mark.jasmin]


@pytest.fixture(autouse=True)
def fresh(smsc: RunningSmsc) -> None:
    smsc.set_fault("none")
    smsc.admin("POST", "/reset")


def job(body: str = "hello", *, encoding: str = "gsm7", to: str = "+31612345678") -> Job:
    return Job(
        id=new_message_id(),
        tenant="t",
        to=to,
        sender="Bank",
        body=body,
        encoding=encoding,
        expires_at=time.time() + 3600,
    )


def http_adapter(jasmin: JasminInstance, *, password: str = PASSWORD) -> JasminPlatform:
    return JasminPlatform(url=jasmin.send_url, username=USERNAME, password=password, timeout_s=5.0)


def smpp_adapter(jasmin: JasminInstance, *, password: str = PASSWORD) -> SmppPlatform:
    link = SmppLink(
        host="127.0.0.1",
        port=jasmin.smpp_port,
        system_id=USERNAME,
        password=password,
        timeout_s=5.0,
        window=10,
        enquire_link_interval_s=30.0,
    )
    return SmppPlatform(link=link)


@pytest.fixture
async def over_http(jasmin: JasminInstance) -> AsyncIterator[JasminPlatform]:
    platform = http_adapter(jasmin)
    yield platform
    await platform.aclose()


@pytest.fixture
async def over_smpp(jasmin: JasminInstance) -> AsyncIterator[SmppPlatform]:
    platform = smpp_adapter(jasmin)
    yield platform
    await platform.aclose()


async def test_http_api_accepts_and_delivers_to_the_smsc(
    over_http: JasminPlatform, smsc: RunningSmsc
) -> None:
    texts = [("hello from the relay", "gsm7"), ("Привет", "ucs2")]
    results = await over_http.send([job(text, encoding=encoding) for text, encoding in texts])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 2
    assert all(r.detail.startswith('Success "') for r in results)
    taken = smsc.wait_for_messages(2)
    assert sorted(m["text"] for m in taken) == sorted(text for text, _ in texts)


async def test_smpp_server_accepts_and_delivers_to_the_smsc(
    over_smpp: SmppPlatform, smsc: RunningSmsc
) -> None:
    long_text = "part of a long message " * 12  # 276 septets: two segments
    results = await over_smpp.send([job("hello over SMPP"), job("Привет", encoding="ucs2"), job(long_text)])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert all(r.detail.startswith("message_id ") for r in results)
    taken = smsc.wait_for_messages(3)
    assert sorted(m["text"] for m in taken) == sorted(["hello over SMPP", "Привет", long_text])


async def test_smpp_server_refuses_a_wrong_password_as_an_authentication_failure(
    jasmin: JasminInstance,
) -> None:
    platform = smpp_adapter(jasmin, password="wrong")
    try:
        [result] = await platform.send([job()])
    finally:
        await platform.aclose()
    assert result.outcome is Outcome.UNAVAILABLE
    assert "ESME_RINVPASWD" in result.detail
    assert platform.problem == "authentication failed"


async def test_http_wrong_password_makes_the_site_unavailable(jasmin: JasminInstance) -> None:
    platform = http_adapter(jasmin, password="wrong")
    try:
        [result] = await platform.send([job()])
        assert result.outcome is Outcome.UNAVAILABLE
        assert "Authentication failure" in result.detail
        assert platform.problem == "authentication failed"
    finally:
        await platform.aclose()


async def test_http_every_accepted_message_reaches_the_smsc(
    jasmin: JasminInstance, smsc: RunningSmsc
) -> None:
    """Jasmin 0.11.1 answers `Success` to a validity-period and then drops the message when the time it
    makes of it falls in the last tenth of a second (smpp.pdu's tenths come out as a float above 9). Sent
    every 25 ms for 1.5 s, some messages always fall there; the relay sends no validity-period."""
    platform = JasminPlatform(url=jasmin.send_url, username=USERNAME, password=PASSWORD, timeout_s=10.0)
    texts = [f"paced {n}" for n in range(60)]

    async def paced(n: int) -> list[Result]:
        await asyncio.sleep(n * 0.025)
        return await platform.send([replace(job(texts[n]), expires_at=time.time() + 86_400)])

    try:
        results = await asyncio.gather(*(paced(n) for n in range(len(texts))))
    finally:
        await platform.aclose()
    assert [result.outcome for [result] in results] == [Outcome.ACCEPTED] * len(texts)
    taken = smsc.wait_for_messages(len(texts), timeout_s=20)
    assert sorted(m["text"] for m in taken) == sorted(texts)


async def test_http_throughput_exceeded_and_no_route_are_told_apart(jasmin: JasminInstance) -> None:
    console = jasmin.jcli()
    try:
        console.block("user -u relay", mt_messaging_cred="quota http_throughput 1")
    finally:
        console.close()
    platform = http_adapter(jasmin)
    try:
        results = await platform.send([job(), job(), job()])
        throttled = [r for r in results if "throughput exceeded" in r.detail]
        assert throttled and all(r.outcome is Outcome.UNAVAILABLE for r in throttled)
        assert platform.problem is None
        console = jasmin.jcli()
        try:
            console.run("mtrouter -r 0")
        finally:
            console.close()
        await asyncio.sleep(1.1)  # past the throughput window
        [no_route] = await platform.send([job()])
        assert (no_route.outcome, no_route.detail) == (Outcome.REJECTED, 'HTTP 412: Error "No route found"')
    finally:
        await platform.aclose()
