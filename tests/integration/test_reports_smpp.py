"""SMPP receipts end to end: the adapter asks for them (registered_delivery), the simulated SMSC sends
them as deliver_sm on the worker's session, the worker publishes each (confirmed) before its
deliver_sm_resp, the recorder folds it; duplicated and unknown receipts are kept once or unmatched."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared.store.report_rows import unmatched_count
from simulator.reports import ReportOutcome, ReportPlan
from simulator.smsc.server import SmscSimulator
from tests.helpers import free_port
from tests.report_helpers import reporting_relay, with_reports

pytestmark = pytest.mark.integration


@pytest.fixture
async def smsc():
    sim = SmscSimulator(host="127.0.0.1", port=0, admin_port=free_port())
    await sim.start()
    yield sim
    await sim.stop()


def site_of(sim: SmscSimulator) -> dict[str, object]:
    return {
        "platform": "smpp",
        "url": "",
        "host": "127.0.0.1",
        "port": sim.port,
        "system_id": "relay",
        "password": "secret",
    }


async def test_receipts_reach_the_message_and_repeats_and_strays_are_kept_once(
    broker_cleanup, settings_factory, store_url, smsc
):
    smsc.state.reports.plan = ReportPlan(outcome=ReportOutcome.DELIVERED, duplicates=1, unknown=True)
    settings = with_reports(settings_factory, {"a": site_of(smsc)})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        view = await relay.wait_for(
            client, message_id, lambda v: v.get("status") == "delivered" and bool(v.get("reports"))
        )
        assert view["status"] == "delivered", view
        (report,) = view["reports"]
        assert (report["site"], report["attempt"], report["platform_status"]) == ("a", 1, "DELIVRD")
        for _ in range(100):
            async with relay.ingress.sessions() as session:
                if await unmatched_count(session) == 1 and smsc.state.reports.sent == 3:
                    break
            await asyncio.sleep(0.1)
        async with relay.ingress.sessions() as session:
            assert await unmatched_count(session) == 1  # the receipt for an id the SMSC never gave
        assert smsc.state.reports.sent == 3  # each answered ESME_ROK only once durable
        assert len((await relay.message(client, message_id))["reports"]) == 1


async def test_an_undelivered_receipt_after_a_delay(broker_cleanup, settings_factory, store_url, smsc):
    smsc.state.reports.plan = ReportPlan(outcome=ReportOutcome.UNDELIVERED, delay_ms=500)
    settings = with_reports(settings_factory, {"a": site_of(smsc)})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        sent = await relay.wait_for(client, message_id, lambda v: v.get("status") == "sent")
        assert sent["status"] == "sent" and sent["reports"] == []  # taken; no receipt yet
        view = await relay.wait_for(client, message_id, lambda v: v.get("status") == "undelivered")
        assert view["status"] == "undelivered" and view["reports"][0]["error_code"] == "001"
