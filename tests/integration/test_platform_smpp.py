"""The SMPP adapter against the simulated SMSC, a real process on its own ports, under each fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from ops.harness.smsc import RunningSmsc, running_smsc
from shared.model import Job, Outcome, new_message_id
from shared.settings import LongMessages
from workers.platforms.smpp import SmppPlatform
from workers.platforms.smpp_link import SmppLink

pytestmark = [pytest.mark.integration]

SYSTEM_ID, PASSWORD = "relay", "secret"


@pytest.fixture(scope="module")
def smsc() -> Iterator[RunningSmsc]:
    with running_smsc(extra_args=["--system-id", SYSTEM_ID, "--password", PASSWORD]) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(smsc: RunningSmsc) -> None:
    smsc.set_fault("none")
    smsc.admin("POST", "/reset")


def make_adapter(
    smsc: RunningSmsc,
    *,
    password: str = PASSWORD,
    timeout_s: float = 1.0,
    window: int = 10,
    enquire_link_interval_s: float = 30.0,
    long_messages: LongMessages = LongMessages.UDH,
) -> SmppPlatform:
    link = SmppLink(
        host="127.0.0.1",
        port=smsc.port,
        system_id=SYSTEM_ID,
        password=password,
        timeout_s=timeout_s,
        window=window,
        enquire_link_interval_s=enquire_link_interval_s,
    )
    return SmppPlatform(link=link, long_messages=long_messages)


@pytest.fixture
async def adapter(smsc: RunningSmsc) -> AsyncIterator[SmppPlatform]:
    platform = make_adapter(smsc)
    yield platform
    await platform.aclose()


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


async def test_accepted_with_the_smscs_message_id_against_the_relays_id(
    adapter: SmppPlatform, smsc: RunningSmsc
) -> None:
    sent = job("hello €uro")
    [result] = await adapter.send([sent])
    assert result.outcome is Outcome.ACCEPTED
    [taken] = smsc.messages()
    assert taken["reference"] == sent.id
    assert result.detail == f"message_id {taken['message_id']}"
    assert (taken["text"], taken["to"], taken["from"], taken["data_coding"]) == (
        "hello €uro",
        "31612345678",
        "Bank",
        0,
    )
    assert taken["validity_period"].endswith("R")  # relative, from the job's validity


async def test_ucs2_and_long_texts_arrive_whole(adapter: SmppPlatform, smsc: RunningSmsc) -> None:
    texts = [("Привет " * 30, "ucs2"), ("long gsm text {} " * 40, "gsm7")]
    results = await adapter.send([job(text, encoding=encoding) for text, encoding in texts])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 2
    taken = {m["text"]: m for m in smsc.messages()}
    assert taken["Привет " * 30]["data_coding"] == 8
    assert taken["Привет " * 30]["parts"] == 4  # 210 UCS-2 characters, 67 a part
    assert taken["long gsm text {} " * 40]["parts"] == 5  # 680 septets with the braces' escapes, 153 a part


async def test_message_payload_carries_a_long_text_in_one_submit(smsc: RunningSmsc) -> None:
    platform = make_adapter(smsc, long_messages=LongMessages.MESSAGE_PAYLOAD)
    try:
        [result] = await platform.send([job("x" * 400)])
    finally:
        await platform.aclose()
    assert result.outcome is Outcome.ACCEPTED
    [taken] = smsc.messages()
    assert (taken["text"], taken["parts"]) == ("x" * 400, 1)


async def test_invalid_destination_is_rejected(adapter: SmppPlatform, smsc: RunningSmsc) -> None:
    [result] = await adapter.send([job(to="+12")])
    assert (result.outcome, result.detail) == (Outcome.REJECTED, "ESME_RINVDSTADR (0x0B)")
    assert smsc.messages() == []


async def test_throttling_slows_the_window_and_retries_before_giving_up(
    adapter: SmppPlatform, smsc: RunningSmsc
) -> None:
    smsc.set_fault("throttle")
    started = time.monotonic()
    [result] = await adapter.send([job()])
    assert (result.outcome, result.detail) == (Outcome.UNAVAILABLE, "ESME_RTHROTTLED (0x58)")
    assert time.monotonic() - started >= 0.2 + 0.4 + 0.8  # three pauses, doubling
    assert adapter._link.window.limit == 1.0  # halved on each answer: 10, 5, 2.5, 1.25, 1
    smsc.set_fault("none")
    [result] = await adapter.send([job()])
    assert result.outcome is Outcome.ACCEPTED


async def test_throttling_that_stops_is_ridden_out(adapter: SmppPlatform, smsc: RunningSmsc) -> None:
    smsc.set_fault("queue-full")
    sending = asyncio.create_task(adapter.send([job()]))
    await asyncio.sleep(0.3)
    smsc.set_fault("none")
    [result] = await sending
    assert result.outcome is Outcome.ACCEPTED
    assert len(smsc.messages()) == 1


async def test_no_response_is_ambiguous(adapter: SmppPlatform, smsc: RunningSmsc) -> None:
    [warm] = await adapter.send([job()])
    assert warm.outcome is Outcome.ACCEPTED
    smsc.set_fault("no-resp")
    [result] = await adapter.send([job()])
    assert result.outcome is Outcome.AMBIGUOUS
    assert "no response" in result.detail


async def test_refused_bind_is_unavailable_and_says_why(smsc: RunningSmsc) -> None:
    smsc.set_fault("bind-refused")
    platform = make_adapter(smsc)
    try:
        [result] = await platform.send([job()])
        assert result.outcome is Outcome.UNAVAILABLE
        assert "ESME_RBINDFAIL" in result.detail
        assert platform.problem == "bind refused: ESME_RBINDFAIL (0x0D)"
    finally:
        await platform.aclose()


async def test_wrong_password_is_an_authentication_failure(smsc: RunningSmsc) -> None:
    platform = make_adapter(smsc, password="wrong")
    try:
        results = await platform.send([job(), job()])
        assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 2
        assert platform.problem == "authentication failed"
        # Backoff: the second bind waits instead of hammering the SMSC.
        assert smsc.stats()["binds"] == 0
    finally:
        await platform.aclose()


async def test_smsc_down_is_unavailable_then_recovers(smsc: RunningSmsc) -> None:
    platform = make_adapter(smsc)
    try:
        smsc.set_fault("down")
        [result] = await platform.send([job()])
        assert result.outcome is Outcome.UNAVAILABLE
        assert platform.problem is not None and platform.problem.startswith("SMSC unreachable")
        smsc.set_fault("none")
        await asyncio.sleep(0.6)  # the first backoff
        [result] = await platform.send([job()])
        assert result.outcome is Outcome.ACCEPTED
        assert platform.problem is None
    finally:
        await platform.aclose()


async def test_an_unbind_from_the_smsc_is_followed_by_a_new_bind(
    adapter: SmppPlatform, smsc: RunningSmsc
) -> None:
    [first] = await adapter.send([job()])
    # From a thread: the adapter's loop must be free to answer the unbind while the switch waits for it.
    await asyncio.to_thread(smsc.set_fault, "unbind")
    [second] = await adapter.send([job()])
    assert [first.outcome, second.outcome] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert smsc.stats()["binds"] == 2


async def test_idle_session_is_checked_with_enquire_link_and_closed_with_unbind(smsc: RunningSmsc) -> None:
    platform = make_adapter(smsc, enquire_link_interval_s=0.3)
    [result] = await platform.send([job()])
    assert result.outcome is Outcome.ACCEPTED
    await asyncio.sleep(1.5)
    await platform.aclose()
    stats = smsc.stats()
    assert stats["enquire_links"] >= 2
    assert stats["unbinds_received"] == 1


async def test_window_bounds_outstanding_submits(smsc: RunningSmsc) -> None:
    platform = make_adapter(smsc, window=4, timeout_s=0.5)
    smsc.set_fault("no-resp")
    try:
        results = await asyncio.wait_for(platform.send([job() for _ in range(8)]), timeout=5)
        # Four at a time, each waiting its 0.5 s: two rounds.
        assert [r.outcome for r in results] == [Outcome.AMBIGUOUS] * 8
        assert platform._link.window.in_use == 0
    finally:
        await platform.aclose()


async def test_many_messages_over_one_session(adapter: SmppPlatform, smsc: RunningSmsc) -> None:
    jobs = [job(f"message {n}") for n in range(500)]
    results = await asyncio.gather(*(adapter.send([one]) for one in jobs))
    assert {r.outcome for [r] in results} == {Outcome.ACCEPTED}
    stats = smsc.stats()
    assert (stats["unique"], stats["duplicates"], stats["binds"]) == (500, 0, 1)
