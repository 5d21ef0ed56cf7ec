"""The drop-in APIs' parsing and mapping, without services: CM validity, Kannel fields and charsets,
Twilio credentials and statuses."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from ingress.compat import cm, kannel, twilio
from ingress.compat.common import international
from shared.store.messages import AttemptView, MessageView

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("48h", 48 * 3600),
        ("30m", 1800),
        ("1d2h30m", 86400 + 2 * 3600 + 1800),
        ("2026-12-01 14:00 GMT", 2 * 3600),
        ("2026-12-01T13:30:00", 5400),
        ("2026-12-01T14:00:00+01:00", 3600),
    ],
)
def test_cm_validity_spans_and_times(value, seconds):
    assert cm.validity_s(value, now=NOW) == seconds


@pytest.mark.parametrize("value", ["soon", "", 7, None])
def test_cm_validity_that_is_neither_is_left_for_the_native_check_to_refuse(value):
    assert cm.validity_s(value, now=NOW) == value


def test_international_numbers_with_00_become_plus():
    assert international(" 0031612345678") == "+31612345678"
    assert international("+31612345678") == "+31612345678"
    assert international("0612345678") == "0612345678"


def raw(text: str, charset: str) -> str:
    """A field as the Kannel parser holds it: the bytes, one latin-1 character each."""
    return text.encode(charset).decode("latin-1")


def test_kannel_text_charsets_default_as_kannel():
    assert kannel._decoded_text({"text": raw("caf\u00e9 \u20ac", "cp1252")}, {}) == "caf\u00e9 \u20ac"
    assert kannel._decoded_text({"text": raw("\u043f\u0440", "utf-16-be")}, {"coding": 2}) == "\u043f\u0440"
    utf8 = {"text": raw("\u043f\u0440", "utf-8"), "charset": "UTF-8"}
    assert kannel._decoded_text(utf8, {"coding": 2}) == "\u043f\u0440"
    with pytest.raises(kannel.KannelAnswer, match="Charset or body misformed"):
        kannel._decoded_text({"text": "x", "charset": "no-such-charset"}, {})
    with pytest.raises(kannel.KannelAnswer, match="Charset or body misformed"):
        kannel._decoded_text({"text": raw("\u00e9", "latin-1"), "charset": "UTF-8"}, {})


def test_kannel_numeric_fields_read_like_sscanf_and_are_range_checked():
    assert kannel._numbers({"validity": "15min", "dlr-mask": "abc", "coding": "2"}) == {
        "validity": 15,
        "coding": 2,
    }
    with pytest.raises(kannel.KannelAnswer, match=r"^DLR-Mask field misformed, rejected$"):
        kannel._numbers({"dlr-mask": "64"})
    with pytest.raises(kannel.KannelAnswer, match=r"^Priority field misformed, rejected$"):
        kannel._numbers({"priority": "4"})
    refused = [kannel._not_supported("x").text]
    for name in kannel.UNSUPPORTED:
        with pytest.raises(kannel.KannelAnswer) as answer:
            kannel._numbers({name: "1"})
        assert answer.value.unsupported and "not supported by this relay" in answer.value.text
        refused.append(answer.value.text)
    assert len(set(refused)) == len(kannel.UNSUPPORTED) + 1
    assert kannel._numbers({"mclass": "-1", "dlr-url": ""}) == {"mclass": -1}


def test_twilio_basic_credentials():
    encoded = base64.b64encode(b"ACabc:rk_key:with:colons").decode()
    assert twilio._basic(f"Basic {encoded}") == ("ACabc", "rk_key:with:colons")
    assert twilio._basic(f"Bearer {encoded}") is None
    assert twilio._basic("Basic !!!") is None
    assert twilio._basic("Basic " + base64.b64encode(b"no-colon").decode()) is None
    assert twilio._basic(None) is None


def view(status: str, history: list[AttemptView]) -> MessageView:
    return MessageView(
        id="a" * 32,
        tenant="bank",
        status=status,
        site="a",
        to_number="+31612345678",
        sender="MyBank",
        client_reference=None,
        segments=2,
        encoding="gsm7",
        attempts=len(history),
        ambiguous=0,
        accepted_at=NOW,
        updated_at=NOW + timedelta(seconds=5),
        expires_at=NOW + timedelta(days=1),
        history=history,
        reports=[],
    )


def attempt(outcome: str, detail: str) -> AttemptView:
    return AttemptView(
        site="a",
        attempt=1,
        outcome=outcome,
        detail=detail,
        at=NOW + timedelta(seconds=3),
        latency_ms=5.0,
        resent=False,
    )


@pytest.mark.parametrize(
    ("status", "outcome", "twilio_status", "error_code"),
    [
        ("accepted", None, "queued", None),
        ("retrying", "unavailable", "queued", None),
        ("sent", "accepted", "sent", None),
        ("delivered", "accepted", "delivered", None),
        ("undelivered", "accepted", "undelivered", 30008),
        ("rejected", "rejected", "failed", 30008),
        ("expired", "expired", "failed", 30036),
        ("dead", "unavailable", "failed", 30008),
    ],
)
def test_twilio_statuses_map_from_the_relays(status, outcome, twilio_status, error_code):
    history = [attempt(outcome, f"{outcome} detail")] if outcome else []
    resource = twilio._fetched("AC" + "0" * 32, view(status, history), "Hello")
    assert resource["status"] == twilio_status and resource["error_code"] == error_code
    assert (
        resource["sid"] == "SM" + "a" * 32 and resource["num_segments"] == "2" and resource["body"] == "Hello"
    )
    assert resource["date_created"] == "Tue, 01 Dec 2026 12:00:00 +0000"
    assert resource["date_sent"] == ("Tue, 01 Dec 2026 12:00:03 +0000" if outcome == "accepted" else None)
    assert resource["error_message"] == (f"{outcome} detail" if error_code else None)
