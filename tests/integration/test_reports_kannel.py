"""Kannel's delivery reports end to end: a real Kannel (bearerbox, smsbox, fakesmsc) calls the relay's
dlr-url for masks 1 (delivered to the phone) and 8 (delivered to the SMSC), each naming the relay message
and attempt in the URL; the message ends `delivered` with both reports beside its attempt."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ops.harness.kannel import KannelInstance, running_kannel
from tests.report_helpers import reporting_relay, with_reports

pytestmark = [pytest.mark.integration, pytest.mark.kannel]


@pytest.fixture
def kannel(
    tmp_path_factory: pytest.TempPathFactory, kannel_binaries: dict[str, str]
) -> Iterator[KannelInstance]:
    with running_kannel(tmp_path_factory.mktemp("kannel-dlr"), kannel_binaries) as instance:
        yield instance


async def test_kannel_reports_for_masks_1_and_8_reach_the_message(
    broker_cleanup, settings_factory, store_url, kannel: KannelInstance
) -> None:
    site = {
        "platform": "kannel",
        "url": kannel.sendsms_url,
        "username": kannel.username,
        "password": kannel.password,
    }
    settings = with_reports(settings_factory, {"a": site})
    async with reporting_relay(settings) as relay, httpx.AsyncClient(timeout=10) as client:
        ids = [await relay.submit(client, body=f"code {n}") for n in range(3)]
        for message_id in ids:
            view = await relay.wait_for(
                client,
                message_id,
                lambda v: v.get("status") == "delivered" and len(v.get("reports", [])) == 2,
                timeout_s=30,
            )
            assert view["status"] == "delivered", view
            reports = sorted(view["reports"], key=lambda r: r["platform_status"])
            assert [(r["platform_status"], r["status"]) for r in reports] == [
                ("1", "delivered"),
                ("8", "sent"),
            ]
            assert {(r["site"], r["attempt"]) for r in reports} == {("a", 1)}
