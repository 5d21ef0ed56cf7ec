"""The Kannel adapter against real Kannel instances (bearerbox, smsbox, fakesmsc), two side by side."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from ops.harness.kannel import FakeSmscMessage, KannelInstance, running_kannel
from shared.model import Job, Outcome
from workers.platforms.kannel import KannelPlatform

pytestmark = [pytest.mark.integration, pytest.mark.kannel]


@pytest.fixture(scope="module")
def kannels(
    tmp_path_factory: pytest.TempPathFactory, kannel_binaries: dict[str, str]
) -> Iterator[tuple[KannelInstance, KannelInstance]]:
    with (
        running_kannel(tmp_path_factory.mktemp("kannel-a"), kannel_binaries) as site_a,
        running_kannel(tmp_path_factory.mktemp("kannel-b"), kannel_binaries) as site_b,
    ):
        yield site_a, site_b


@pytest.fixture
def kannel(kannels: tuple[KannelInstance, KannelInstance]) -> KannelInstance:
    return kannels[0]


def adapter_for(kannel: KannelInstance, *, password: str | None = None) -> KannelPlatform:
    return KannelPlatform(
        url=kannel.sendsms_url,
        username=kannel.username,
        password=password or kannel.password,
        timeout_s=2.0,
        concurrency=8,
    )


@pytest.fixture
async def adapter(kannel: KannelInstance) -> AsyncIterator[KannelPlatform]:
    platform = adapter_for(kannel)
    yield platform
    await platform.aclose()


def job(tag: str, *, body: str | None = None, encoding: str = "gsm7", to: str = "+31612345678") -> Job:
    return Job(
        id=tag,
        tenant="t",
        to=to,
        sender="Bank",
        body=body if body is not None else f"hello {tag}",
        encoding=encoding,
        expires_at=time.time() + 600,
    )


async def test_accepted_messages_all_arrive_at_the_smsc(
    kannel: KannelInstance, adapter: KannelPlatform
) -> None:
    before = len(kannel.received())
    jobs = [job(f"acc{n:03d}") for n in range(40)]
    results = await adapter.send(jobs)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 40
    assert results[0].detail.startswith(("0:", "3:"))
    arrived = kannel.wait_for_received(before + 40)[before:]
    assert sorted(m.text for m in arrived) == sorted(j.body for j in jobs)
    assert {(m.sender, m.receiver) for m in arrived} == {("Bank", "+31612345678")}
    # Each message names the relay's id in Kannel's access log.
    access_log = (kannel.directory / "access.log").read_text(errors="replace")
    assert all(f"[BINF:{j.id}]" in access_log for j in jobs), access_log[-2000:]


async def test_unicode_text_arrives_as_ucs2(kannel: KannelInstance, adapter: KannelPlatform) -> None:
    before = len(kannel.received())
    text = "Привет €5 — ok"
    (result,) = await adapter.send([job("uni1", body=text, encoding="ucs2")])
    assert result.outcome is Outcome.ACCEPTED
    (arrived,) = kannel.wait_for_received(before + 1)[before:]
    assert arrived.kind == "ucs-2"
    assert arrived.text == text


async def test_wrong_password_makes_the_site_unavailable_not_the_message_rejected(
    kannel: KannelInstance,
) -> None:
    platform = adapter_for(kannel, password="wrong")
    try:
        (result,) = await platform.send([job("pw1")])
        assert result.outcome is Outcome.UNAVAILABLE
        assert "403" in result.detail
        assert "Authorization failed" in result.detail
        assert platform.problem == "authentication failed"
    finally:
        await platform.aclose()


async def test_wrong_path_makes_the_site_unavailable(kannel: KannelInstance) -> None:
    platform = KannelPlatform(
        url=kannel.sendsms_url.replace("sendsms", "sendsmz"),
        username=kannel.username,
        password=kannel.password,
        timeout_s=2.0,
    )
    try:
        (result,) = await platform.send([job("path1")])
    finally:
        await platform.aclose()
    assert (result.outcome, result.detail) == (Outcome.UNAVAILABLE, "HTTP 404: Unknown request.")


async def test_missing_receiver_is_rejected_with_kannels_reason(adapter: KannelPlatform) -> None:
    (result,) = await adapter.send([job("norcpt", to="")])
    assert result.outcome is Outcome.REJECTED
    assert "receiver" in result.detail


async def test_bearerbox_down_is_unavailable_and_recovers(
    kannel: KannelInstance, adapter: KannelPlatform
) -> None:
    kannel.kill_bearerbox()
    try:
        results = await adapter.send([job("bbdown1"), job("bbdown2")])
        assert [r.outcome for r in results] == [Outcome.UNAVAILABLE] * 2
    finally:
        kannel.restart_bearerbox()
    before = len(kannel.received())
    (result,) = await adapter.send([job("bbup1")])
    assert result.outcome is Outcome.ACCEPTED
    assert [m.text for m in kannel.wait_for_received(before + 1)[before:]] == ["hello bbup1"]


async def test_smsbox_down_is_unavailable(kannel: KannelInstance, adapter: KannelPlatform) -> None:
    kannel.kill_smsbox()
    try:
        (result,) = await adapter.send([job("sbdown")])
        assert result.outcome is Outcome.UNAVAILABLE
        assert "ConnectionRefused" in result.detail
    finally:
        kannel.start_smsbox()
        kannel.wait_until_online()
    before = len(kannel.received())
    (result,) = await adapter.send([job("sbup")])
    assert result.outcome is Outcome.ACCEPTED
    # Delivered before the next test counts this instance's traffic.
    assert [m.text for m in kannel.wait_for_received(before + 1)[before:]] == ["hello sbup"]


async def test_two_instances_side_by_side_keep_their_own_traffic(
    kannels: tuple[KannelInstance, KannelInstance],
) -> None:
    site_a, site_b = kannels
    before_a, before_b = len(site_a.received()), len(site_b.received())
    platform_a, platform_b = adapter_for(site_a), adapter_for(site_b)
    try:
        assert [r.outcome for r in await platform_a.send([job("sideA1"), job("sideA2")])] == [
            Outcome.ACCEPTED
        ] * 2
        assert [r.outcome for r in await platform_b.send([job("sideB1")])] == [Outcome.ACCEPTED]
    finally:
        await platform_a.aclose()
        await platform_b.aclose()

    # Only this test's messages count: a late one of an earlier test must not decide it.
    def sides(messages: list[FakeSmscMessage]) -> list[str]:
        return sorted(m.text for m in messages if m.text.startswith("hello side"))

    assert sides(site_a.wait_for_received(before_a + 2)[before_a:]) == ["hello sideA1", "hello sideA2"]
    assert sides(site_b.wait_for_received(before_b + 1)[before_b:]) == ["hello sideB1"]
