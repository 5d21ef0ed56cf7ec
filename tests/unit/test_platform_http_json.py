"""Classification of every answer of an http-json platform (no network: a fake HTTP client)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from shared.http1 import AnswerLost, HttpAnswer, NotSent, TransportFailure
from shared.model import Job, Outcome
from tests.fake_http import FakeHttp, SentRequest, answer
from workers.platforms.http_json import HttpJsonPlatform, classify_answer, encode_submit

URL = "http://platform.test/v1.0/message"


def job(n: int = 0, **fields: object) -> Job:
    base: dict[str, object] = {
        "id": f"msg{n}",
        "tenant": "t",
        "to": "+31612345678",
        "sender": "Bank",
        "body": "hello",
        "expires_at": time.time() + 3600,
    }
    return Job(**{**base, **fields})  # type: ignore[arg-type]


def platform(handler: Callable[[SentRequest], HttpAnswer], *, batch_size: int = 100) -> HttpJsonPlatform:
    return HttpJsonPlatform(
        url=URL, token="tok", timeout_s=1.0, batch_size=batch_size, client=FakeHttp(handler)
    )


def answer_all(status_of: Callable[[dict[str, object]], str]) -> Callable[[SentRequest], HttpAnswer]:
    def handler(request: SentRequest) -> HttpAnswer:
        msgs = orjson.loads(request.body)["messages"]["msg"]
        return answer(
            200,
            orjson.dumps(
                {
                    "errorCode": 0,
                    "details": "ok",
                    "messages": [
                        {
                            "to": m["to"][0]["number"],
                            "reference": m["reference"],
                            "status": status_of(m),
                            "messageErrorCode": 0 if status_of(m) == "Accepted" else 303,
                            "messageDetails": None if status_of(m) == "Accepted" else "invalid number",
                            "parts": 1,
                        }
                        for m in msgs
                    ],
                }
            ),
        )

    return handler


def test_body_follows_the_contract() -> None:
    expires_at = 1_800_000_000.0
    body = orjson.loads(encode_submit([job(1, expires_at=expires_at)], token="secret"))
    msg = body["messages"]["msg"][0]
    assert body["messages"]["authentication"] == {"producttoken": "secret"}
    assert msg["reference"] == "msg1"
    assert msg["to"] == [{"number": "+31612345678"}]
    assert msg["from"] == "Bank"
    assert msg["body"] == {"type": "auto", "content": "hello"}
    assert msg["validity"] == "2027-01-15T08:00:00+00:00"


async def test_per_message_accepted_and_rejected_in_order() -> None:
    adapter = platform(answer_all(lambda m: "Rejected" if m["reference"] == "msg1" else "Accepted"))
    results = await adapter.send([job(0), job(1), job(2)])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]
    assert "invalid number" in results[1].detail
    await adapter.aclose()


async def test_more_jobs_than_the_batch_go_in_several_requests() -> None:
    sizes: list[int] = []
    inner = answer_all(lambda m: "Accepted")

    def handler(request: SentRequest) -> HttpAnswer:
        sizes.append(len(orjson.loads(request.body)["messages"]["msg"]))
        return inner(request)

    adapter = platform(handler, batch_size=2)
    assert adapter.max_batch == 2
    results = await adapter.send([job(n) for n in range(5)])
    assert sizes == [2, 2, 1]
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 5


async def test_answers_are_matched_by_reference_and_a_missing_one_is_ambiguous() -> None:
    def handler(request: SentRequest) -> HttpAnswer:
        return answer(
            200, orjson.dumps({"errorCode": 0, "messages": [{"reference": "msg1", "status": "Accepted"}]})
        )

    results = await platform(handler).send([job(0), job(1)])
    assert [r.outcome for r in results] == [Outcome.AMBIGUOUS, Outcome.ACCEPTED]


async def test_whole_request_refused_is_split_so_one_bad_message_only_rejects_itself() -> None:
    requests: list[int] = []

    def handler(request: SentRequest) -> HttpAnswer:
        msgs = orjson.loads(request.body)["messages"]["msg"]
        requests.append(len(msgs))
        if any(m["to"][0]["number"] == "bad" for m in msgs):
            return answer(400, orjson.dumps({"errorCode": 201, "details": "invalid recipient"}))
        return answer_all(lambda m: "Accepted")(request)

    results = await platform(handler).send([job(0), job(1, to="bad"), job(2)])
    assert requests == [3, 1, 1, 1]
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]
    assert "invalid recipient" in results[1].detail


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b'{"errorCode": 900, "details": "busy"}', Outcome.UNAVAILABLE),
        (429, b"slow down", Outcome.UNAVAILABLE),
        (401, b'{"errorCode": 101, "details": "invalid product token"}', Outcome.UNAVAILABLE),
        (403, b"forbidden", Outcome.UNAVAILABLE),
        (404, b"not found", Outcome.UNAVAILABLE),
        (500, b'{"errorCode": 999, "details": "nothing processed", "messages": []}', Outcome.UNAVAILABLE),
        (500, b"<html>Internal Server Error</html>", Outcome.AMBIGUOUS),
        (502, b"<html>Bad Gateway</html>", Outcome.AMBIGUOUS),
        (504, b"", Outcome.AMBIGUOUS),
        (200, b"<html>not json</html>", Outcome.AMBIGUOUS),
        (200, b'{"errorCode": 0, "messages": []}', Outcome.AMBIGUOUS),
        (200, b"[1, 2]", Outcome.AMBIGUOUS),
        (400, b'{"errorCode": 201, "details": "bad"}', Outcome.REJECTED),
    ],
)
def test_whole_request_answers(status: int, body: bytes, expected: Outcome) -> None:
    results = classify_answer(status, body, [job(0)])
    assert results is not None
    assert [r.outcome for r in results] == [expected]
    assert str(status) in results[0].detail


def test_unknown_message_status_is_ambiguous() -> None:
    body = orjson.dumps({"errorCode": 0, "messages": [{"reference": "msg0", "status": "Pending"}]})
    results = classify_answer(200, body, [job(0)])
    assert results is not None
    assert results[0].outcome is Outcome.AMBIGUOUS


@pytest.mark.parametrize(
    ("error", "expected", "detail"),
    [
        (NotSent("connect failed: refused"), Outcome.UNAVAILABLE, "not sent"),
        (NotSent("request not sent whole"), Outcome.UNAVAILABLE, "not sent"),
        (AnswerLost("no answer within 1.0 s"), Outcome.AMBIGUOUS, "answer lost"),
        (AnswerLost("connection closed before the answer"), Outcome.AMBIGUOUS, "answer lost"),
    ],
)
async def test_transport_failures(error: TransportFailure, expected: Outcome, detail: str) -> None:
    def handler(request: SentRequest) -> HttpAnswer:
        raise error

    results = await platform(handler).send([job(0), job(1)])
    assert [r.outcome for r in results] == [expected, expected]
    assert results[0].detail.startswith(detail)
    assert str(error) in results[0].detail


async def test_request_goes_to_the_configured_path_as_json() -> None:
    fake = FakeHttp(answer_all(lambda m: "Accepted"))
    adapter = HttpJsonPlatform(url=URL, token="tok", timeout_s=1.0, batch_size=10, client=fake)
    await adapter.send([job(0)])
    await adapter.aclose()
    (sent,) = fake.sent
    assert (sent.method, sent.target) == ("POST", "/v1.0/message")
    assert sent.headers["Content-Type"] == "application/json"
    assert fake.closed


def test_batch_size_beyond_the_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        HttpJsonPlatform(url=URL, token=None, timeout_s=1.0, batch_size=101)
