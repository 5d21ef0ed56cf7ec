"""Delivery reports end to end with the http-json simulator's callbacks: the relay asks for them, the
simulator posts them to the ingress, the recorder folds them; forged and repeated reports are refused
or counted, a report naming no message is kept unmatched, and a report is answered only once durable."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from prometheus_client import REGISTRY

from shared.store.report_rows import unmatched_count
from simulator.server import PlatformSimulator
from tests.helpers import free_port
from tests.ingress_helpers import TcpProxy
from tests.report_helpers import SECRET, reporting_relay, with_reports

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def simulator():
    sim = PlatformSimulator(host="127.0.0.1", port=free_port(), admin_port=free_port())
    await sim.start()
    yield sim
    await sim.stop()


def site_of(sim: PlatformSimulator) -> dict[str, object]:
    return {"platform": "http-json", "url": f"http://127.0.0.1:{sim.port}/v1.0/message"}


def reported(status: str):  # type: ignore[no-untyped-def]
    return lambda view: view.get("status") == status and bool(view.get("reports"))


async def test_a_delivered_report_reaches_the_message_with_its_attempt(
    broker_cleanup, settings_factory, store_url, simulator
):
    settings = with_reports(settings_factory, {"a": site_of(simulator)})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        view = await relay.wait_for(client, message_id, reported("delivered"))
        assert view["status"] == "delivered", view
        (report,) = view["reports"]
        assert report["site"] == "a" and report["attempt"] == 1 and report["status"] == "delivered"
        assert report["platform_status"] == "DELIVERED" and report["error_code"] == "0"
        assert [a["attempt"] for a in view["history"]] == [1]


async def test_undelivered_and_repeated_reports_are_kept_once_and_counted(
    broker_cleanup, settings_factory, store_url, simulator
):
    simulator.platform.reports.switch.plan = simulator.platform.reports.switch.plan.__class__(
        outcome="undelivered",  # type: ignore[arg-type]
        duplicates=2,
        delay_ms=200,
    )
    settings = with_reports(settings_factory, {"a": site_of(simulator)})
    repeated_before = sample("relay_ingress_reports_folded_total", result="repeated")
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        view = await relay.wait_for(client, message_id, reported("undelivered"))
        assert view["status"] == "undelivered", view
        deadline_view = await relay.wait_for(
            client,
            message_id,
            lambda _: sample("relay_ingress_reports_folded_total", result="repeated") >= repeated_before + 2,
            timeout_s=10,
        )
        assert len(deadline_view["reports"]) == 1  # three copies sent, one kept
        assert sample("relay_ingress_reports_folded_total", result="repeated") == repeated_before + 2
        assert simulator.platform.reports.switch.sent == 3


async def test_a_report_for_an_unknown_id_is_kept_unmatched_and_counted(
    broker_cleanup, settings_factory, store_url, simulator
):
    simulator.platform.reports.switch.plan = simulator.platform.reports.switch.plan.__class__(unknown=True)
    settings = with_reports(settings_factory, {"a": site_of(simulator)})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        await relay.wait_for(client, message_id, reported("delivered"))
        for _ in range(100):
            async with relay.ingress.sessions() as session:
                if await unmatched_count(session) == 1:
                    break
            await relay.wait_for(client, message_id, lambda _: False, timeout_s=0.1)
        async with relay.ingress.sessions() as session:
            assert await unmatched_count(session) == 1
        assert simulator.platform.reports.switch.sent == 2


async def test_forged_reports_are_refused_and_counted(broker_cleanup, settings_factory, store_url, simulator):
    settings = with_reports(settings_factory, {"a": site_of(simulator), "b": site_of(simulator)})
    before = sample("relay_ingress_report_requests_total", platform="http-json", result="forged")
    body = {"id": "x", "status": "DELIVERED"}
    async with reporting_relay(settings, workers=False) as relay, httpx.AsyncClient(timeout=10) as client:
        ref = "?ref=" + "a" * 32 + ".1"
        wrong_secret = await client.post(
            relay.report_url("a", secret="not-the-secret-at-all") + ref, json=body
        )
        unknown_site = await client.post(relay.report_url("a").replace("/a/", "/zz/") + ref, json=body)
        wrong_kind = await client.post(relay.report_url("a", platform="kannel") + ref + "&type=1")
        assert wrong_secret.status_code == unknown_site.status_code == wrong_kind.status_code == 403
        right = await client.post(relay.report_url("a") + ref, json=body)
        assert right.status_code == 200, right.text
        malformed = await client.post(relay.report_url("a") + ref, content=b"not json")
        assert malformed.status_code == 400
    assert sample("relay_ingress_report_requests_total", platform="http-json", result="forged") == before + 2
    assert SECRET not in wrong_secret.text


async def test_a_report_the_broker_cannot_take_is_spooled_answered_and_forwarded(
    broker_cleanup, settings_factory, store_url, simulator, broker_url
):
    """A report is answered only once durable: while the broker is cut off it is fsynced in the ingress's
    spool (Kannel would not send it again after a 503), answered 200, and forwarded once the broker is
    back; the store has it although the ingress that took it never folded it (its recorder was stopped)."""
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    parts = urlsplit(broker_url)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"))
    settings = with_reports(
        settings_factory, {"a": site_of(simulator)}, broker={"url": via_proxy, "confirm_timeout_s": 0.5}
    )
    ref = "?ref=" + "b" * 32 + ".1"
    counted = {"platform": "http-json", "result": "spooled"}
    spooled = sample("relay_ingress_report_requests_total", **counted)
    try:
        async with reporting_relay(settings, workers=False) as relay, httpx.AsyncClient(timeout=30) as client:
            await relay.ingress.recorder.close()  # the store gets nothing from this process from now on
            await proxy.cut()
            taken = await client.post(relay.report_url("a") + ref, json={"id": "p1", "status": "DELIVERED"})
            assert taken.status_code == 200, taken.text
            assert relay.ingress.spool_backlog == 1
            await proxy.restore()
            deadline = time.monotonic() + 30
            while relay.ingress.spool_backlog or not relay.ingress.link.available:
                assert time.monotonic() < deadline, "the spooled report was not forwarded"
                await asyncio.sleep(0.1)
    finally:
        await proxy.close()
    assert sample("relay_ingress_report_requests_total", **counted) == spooled + 1
    settings = with_reports(settings_factory, {"a": site_of(simulator)})
    async with reporting_relay(settings, workers=False) as again:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(100):
                async with again.ingress.sessions() as session:
                    if await unmatched_count(session) == 1:
                        break
                await again.wait_for(client, "b" * 32, lambda _: False, timeout_s=0.1)
        async with again.ingress.sessions() as session:
            assert await unmatched_count(session) == 1  # its message never existed: kept unmatched
