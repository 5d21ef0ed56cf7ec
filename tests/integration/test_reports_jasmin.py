"""Jasmin's delivery reports end to end: Jasmin 0.11.0 (its DLR lookup and thrower on) takes the relay's
messages over HTTP with dlr-level 3, sends them through its SMPP connector to the simulated SMSC, which
sends receipts; Jasmin POSTs level 1 (ESME_ROK) and level 2 (DELIVRD) to the relay's dlr-url, which
answers ACK/Jasmin once each is durable. (Jasmin 0.11.1 loses the receipts: DLRMapNotFound.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ops.harness.jasmin import PASSWORD, REPORTING_VERSION, USERNAME, JasminInstance, running_jasmin
from ops.harness.smsc import RunningSmsc
from tests.report_helpers import reporting_relay, with_reports

pytestmark = [pytest.mark.integration, pytest.mark.jasmin]


@pytest.fixture(scope="module")
def jasmin(tmp_path_factory: pytest.TempPathFactory, smsc: RunningSmsc) -> Iterator[JasminInstance]:
    with running_jasmin(
        tmp_path_factory.mktemp("jasmin-dlr"), smsc_port=smsc.port, version=REPORTING_VERSION
    ) as instance:
        yield instance


async def test_jasmin_reports_both_levels_and_the_message_ends_delivered(
    broker_cleanup, settings_factory, store_url, smsc: RunningSmsc, jasmin: JasminInstance
) -> None:
    smsc.admin("POST", "/reports", {"outcome": "delivered"})
    site = {"platform": "jasmin", "url": jasmin.send_url, "username": USERNAME, "password": PASSWORD}
    settings = with_reports(settings_factory, {"a": site})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        message_id = await relay.submit(client)
        view = await relay.wait_for(
            client,
            message_id,
            lambda v: v.get("status") == "delivered" and len(v.get("reports", [])) == 2,
            timeout_s=45,
        )
        assert view["status"] == "delivered", (view, smsc.admin("GET", "/reports"))
        reports = sorted(view["reports"], key=lambda r: r["platform_status"])
        assert [(r["platform_status"], r["status"]) for r in reports] == [
            ("DELIVRD", "delivered"),
            ("ESME_ROK", "sent"),
        ]
        assert {(r["site"], r["attempt"]) for r in reports} == {("a", 1)}
