"""Jasmin /send: form fields and the classification of every answer (a fake HTTP client).

Jasmin itself cannot be installed on the test machines, so its answers are taken from its documentation.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.http1 import AnswerLost, HttpAnswer, NotSent, TransportFailure
from shared.model import Job, Outcome
from shared.reports import ReportUrls
from tests.fake_http import FakeHttp, SentRequest, answer
from workers.platforms.jasmin import JasminPlatform, classify_answer

URL = "http://jasmin.test:1401/send"


def job(**fields: object) -> Job:
    base: dict[str, object] = {
        "id": "m1",
        "tenant": "t",
        "to": "+31612345678",
        "sender": "Bank",
        "body": "hi",
    }
    return Job(**{**base, **fields})  # type: ignore[arg-type]


def jasmin(handler: Callable[[SentRequest], HttpAnswer], reports: ReportUrls | None = None) -> JasminPlatform:
    return JasminPlatform(
        url=URL, username="u", password="p", timeout_s=1.0, client=FakeHttp(handler), reports=reports
    )


async def test_gsm_message_is_a_form_post_with_content() -> None:
    fake = FakeHttp(lambda request: answer(200, 'Success "07033084-5cfd-4812-90a4-e4d24ffb6e3d"'))
    platform = JasminPlatform(url=URL, username="u", password="p", timeout_s=1.0, client=fake)
    (result,) = await platform.send([job()])
    assert result.outcome is Outcome.ACCEPTED
    assert "07033084" in result.detail
    (sent,) = fake.sent
    assert (sent.method, sent.target) == ("POST", "/send")
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.form == {
        "username": "u",
        "password": "p",
        "to": "+31612345678",
        "from": "Bank",
        "content": "hi",
        "coding": "0",
    }


def test_reports_are_asked_for_at_level_3_with_the_relay_id_and_attempt_in_the_url() -> None:
    platform = jasmin(
        lambda r: answer(200), reports=ReportUrls("http://relay.test/v1/reports/b/s3cret/jasmin")
    )
    form = platform.form(job(id="e" * 32), attempt=3)
    assert (form["dlr"], form["dlr-level"], form["dlr-method"]) == ("yes", "3", "POST")
    assert form["dlr-url"] == "http://relay.test/v1/reports/b/s3cret/jasmin?ref=" + "e" * 32 + ".3"


def test_unicode_message_goes_as_ucs2_hex() -> None:
    form = jasmin(lambda r: answer(200)).form(job(body="€a", encoding="ucs2"))
    assert form["hex-content"] == "20ac0061"
    assert form["coding"] == "8"
    assert "content" not in form


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'Success "abc"', Outcome.ACCEPTED),
        (200, b"Something else", Outcome.AMBIGUOUS),
        (400, b'Error "Mandatory argument [to] is not found."', Outcome.REJECTED),
        (403, b'Error "Authentication failure for username:u"', Outcome.UNAVAILABLE),
        (403, b'Error "User throughput exceeded"', Outcome.UNAVAILABLE),
        (403, b'Error "Cannot charge submit_sm, check RouterPB log file for details"', Outcome.UNAVAILABLE),
        (412, b'Error "No route found"', Outcome.REJECTED),
        (412, b'Error "Failover route has no bound connectors"', Outcome.UNAVAILABLE),
        (500, b'Error "Internal error"', Outcome.UNAVAILABLE),
        (503, b"", Outcome.UNAVAILABLE),
        (404, b"Not found", Outcome.UNAVAILABLE),
    ],
)
def test_answers(status: int, body: bytes, expected: Outcome) -> None:
    result = classify_answer(status, body)
    assert result.outcome is expected
    if status != 200:
        assert str(status) in result.detail


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'Error "Authentication failure for username:u"', "authentication failed"),
        (b'Error "Cannot charge"', "no balance"),
    ],
)
def test_site_wide_refusals_name_the_problem(body: bytes, problem: str) -> None:
    assert classify_answer(403, body).problem == problem


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotSent("connect failed: refused"), Outcome.UNAVAILABLE),
        (NotSent("connect timeout after 1.0 s"), Outcome.UNAVAILABLE),
        (AnswerLost("no answer within 1.0 s"), Outcome.AMBIGUOUS),
    ],
)
async def test_transport_failures(error: TransportFailure, expected: Outcome) -> None:
    def handler(request: SentRequest) -> HttpAnswer:
        raise error

    results = await jasmin(handler).send([job(id="a"), job(id="b")])
    assert [r.outcome for r in results] == [expected, expected]
