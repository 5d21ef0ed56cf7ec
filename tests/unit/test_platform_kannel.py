"""Kannel sendsms: request parameters and the classification of every answer (a fake HTTP client)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ops.harness.kannel import parse_fakesmsc_log
from shared.http1 import AnswerLost, HttpAnswer, NotSent, TransportFailure
from shared.model import Job, Outcome
from shared.reports import ReportUrls
from tests.fake_http import FakeHttp, SentRequest, answer
from workers.platforms.kannel import KannelPlatform, classify_answer

URL = "http://kannel.test/cgi-bin/sendsms"


def job(**fields: object) -> Job:
    base: dict[str, object] = {
        "id": "m1",
        "tenant": "t",
        "to": "+31612345678",
        "sender": "Bank",
        "body": "hi",
    }
    return Job(**{**base, **fields})  # type: ignore[arg-type]


def kannel(handler: Callable[[SentRequest], HttpAnswer], **options: object) -> KannelPlatform:
    return KannelPlatform(
        url=URL,
        username="u",
        password="p",
        timeout_s=1.0,
        client=FakeHttp(handler),
        **options,  # type: ignore[arg-type]
    )


def test_parameters_of_a_gsm_and_a_unicode_message() -> None:
    platform = kannel(
        lambda r: answer(202), reports=ReportUrls("http://relay.test/v1/reports/a/s3cret/kannel")
    )
    gsm = platform.params(job(id="f" * 32, expires_at=1000.0 + 601), attempt=2, now=1000.0)
    assert (
        gsm
        == {
            "username": "u",
            "password": "p",
            "to": "+31612345678",
            "from": "Bank",
            "text": "hi",
            "charset": "UTF-8",
            "coding": "0",
            "binfo": "f" * 32,  # the relay message id
            "dlr-mask": "27",  # 1, 2, 8 and 16: to the phone or not, to the SMSC or not
            # The relay's id and attempt in the URL, Kannel's escapes after them.
            "dlr-url": "http://relay.test/v1/reports/a/s3cret/kannel?ref=" + "f" * 32 + ".2"
            "&type=%d&reply=%A&ts=%T&smsc=%i&platform_id=%F",
            "validity": "11",  # 601 s rounds up to 11 minutes
        }
    )
    unicode = kannel(lambda r: answer(202)).params(job(body="€", encoding="ucs2"))
    assert "dlr-url" not in unicode and "dlr-mask" not in unicode  # no report secret: no reports
    assert unicode["coding"] == "2"
    assert unicode["charset"] == "UTF-8"
    assert "validity" not in unicode  # no expiry set


async def test_request_is_a_get_with_url_encoded_parameters() -> None:
    fake = FakeHttp(lambda request: answer(202, "0: Accepted for delivery"))
    platform = KannelPlatform(url=URL, username="u", password="p", timeout_s=1.0, client=fake)
    results = await platform.send([job(body="a&b=c +d")])
    assert results[0].outcome is Outcome.ACCEPTED
    (sent,) = fake.sent
    assert sent.method == "GET"
    assert sent.target.startswith("/cgi-bin/sendsms?")
    assert sent.query["text"] == "a&b=c +d"
    assert sent.query["to"] == "+31612345678"
    assert platform.max_batch == 1


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (202, b"0: Accepted for delivery", Outcome.ACCEPTED),
        (202, b"3: Queued for later delivery", Outcome.ACCEPTED),
        (200, b"0: Accepted for delivery", Outcome.ACCEPTED),
        (202, b"4: something new", Outcome.AMBIGUOUS),
        (202, b"Sent.", Outcome.ACCEPTED),  # immediate-sendsms-reply = true
        (403, b"Authorization failed for sendsms", Outcome.UNAVAILABLE),  # the site's credentials
        (404, b"Unknown request", Outcome.UNAVAILABLE),  # the site's path
        (403, b"Not routable. Do not try again.", Outcome.REJECTED),
        (400, b"Missing receiver number, rejected", Outcome.REJECTED),
        (503, b"Temporal failure", Outcome.UNAVAILABLE),
        (500, b"Sending failed.", Outcome.UNAVAILABLE),
        (502, b"Bad gateway", Outcome.AMBIGUOUS),
    ],
)
def test_answers(status: int, body: bytes, expected: Outcome) -> None:
    result = classify_answer(status, body)
    assert result.outcome is expected
    assert body.decode()[:10] in result.detail


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotSent("connect failed: refused"), Outcome.UNAVAILABLE),
        (AnswerLost("no answer within 1.0 s"), Outcome.AMBIGUOUS),
        (AnswerLost("connection closed before the answer"), Outcome.AMBIGUOUS),
    ],
)
async def test_transport_failures(error: TransportFailure, expected: Outcome) -> None:
    def handler(request: SentRequest) -> HttpAnswer:
        raise error

    results = await kannel(handler).send([job(id="a"), job(id="b")])
    assert [r.outcome for r in results] == [expected, expected]


def test_fakesmsc_log_lines_are_decoded() -> None:
    log = (
        "2026-11-26 05:59:37 [1] [0] INFO: fakesmsc starting\n"
        "2026-11-26 05:59:39 [1] [0] DEBUG: Got message 1: <Bank +31612345678 text hello world>\n"
        "2026-11-26 05:59:39 [1] [0] DEBUG: Got message 2: <Bank +316 ucs-2 %04%3F%04%40%00++%AC>\n"
    )
    first, second = parse_fakesmsc_log(log)
    assert (first.sender, first.receiver, first.kind, first.text) == (
        "Bank",
        "+31612345678",
        "text",
        "hello world",
    )
    assert (second.kind, second.text) == ("ucs-2", "пр €")
