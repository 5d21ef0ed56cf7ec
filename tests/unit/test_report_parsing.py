"""Each platform's report read into one DeliveryReport: Kannel's DLR types, Jasmin's levels, http-json's
callback, SMPP receipt texts; the reference names the relay message and attempt, or nothing."""

from __future__ import annotations

import pytest

from ingress.report_intake import Malformed, http_json_report, jasmin_report, kannel_report
from shared.model import ReportState
from shared.reports import parse_receipt, parse_reference, receipt_text

ID = "c" * 32


@pytest.mark.parametrize(
    ("kind", "state"),
    [("1", ReportState.DELIVERED), ("2", ReportState.UNDELIVERED), ("8", ReportState.SENT)],
)
def test_kannel_types(kind: str, state: ReportState) -> None:
    query = f"ref={ID}.2&type={kind}&reply=id%3A7+stat%3ADELIVRD+err%3A000&ts=1796140000&smsc=fake"
    report = kannel_report("a", query, b"")
    assert (report.message_id, report.attempt, report.state) == (ID, 2, state)
    assert report.platform_status == kind and report.at == 1796140000.0 and report.raw == query


def test_kannel_without_a_type_is_malformed_and_without_a_reference_unmatched() -> None:
    with pytest.raises(Malformed):
        kannel_report("a", f"ref={ID}.1", b"")
    assert kannel_report("a", "type=1", b"").message_id == ""


def test_jasmin_levels() -> None:
    submitted = jasmin_report("b", f"ref={ID}.1", b"id=j-1&message_status=ESME_ROK&level=1")
    receipt = jasmin_report("b", f"ref={ID}.1", b"id=j-1&message_status=DELIVRD&level=2&err=000")
    failed = jasmin_report("b", f"ref={ID}.1", b"id=j-1&message_status=UNDELIV&level=2&err=001")
    assert [r.state for r in (submitted, receipt, failed)] == [
        ReportState.SENT,
        ReportState.DELIVERED,
        ReportState.UNDELIVERED,
    ]
    assert receipt.platform_id == "j-1" and failed.error_code == "001"


def test_http_json_callback() -> None:
    body = b'{"id": "sim-1", "status": "UNDELIVERED", "error": 1, "at": "2026-12-01T10:00:00+00:00"}'
    report = http_json_report("a", f"ref={ID}.3", body)
    assert (report.attempt, report.state, report.error_code, report.platform_id) == (
        3,
        ReportState.UNDELIVERED,
        "1",
        "sim-1",
    )
    with pytest.raises(Malformed):
        http_json_report("a", "", b"[]")


def test_references_name_a_relay_message_and_attempt_or_nothing() -> None:
    assert parse_reference(f"{ID}.12") == (ID, 12)
    assert parse_reference("not-a-reference.1") is None and parse_reference(None) is None


def test_receipt_texts_round_trip() -> None:
    receipt = parse_receipt(receipt_text(platform_id="0000002a", stat="DELIVRD"))
    assert (
        receipt is not None and receipt.platform_id == "0000002a" and receipt.state is ReportState.DELIVERED
    )
    assert parse_receipt("id:1 stat:UNDELIV err:005").state is ReportState.UNDELIVERED  # type: ignore[union-attr]
    assert parse_receipt("id:1 stat:ENROUTE").state is ReportState.PENDING  # type: ignore[union-attr]
    assert parse_receipt("hello there") is None
