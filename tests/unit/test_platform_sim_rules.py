"""The simulator's rules without a network: body validation, fault parsing, counting, rejections."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from shared.errors import ValidationFailed
from simulator.http11 import Request
from simulator.platform_api import Malformed, PlatformApi, parse_submit, segments
from simulator.state import Counters, Fault, FaultMode, parse_fault


def body(*messages: dict[str, object], token: str = "t") -> bytes:
    return orjson.dumps({"messages": {"authentication": {"producttoken": token}, "msg": list(messages)}})


def msg(reference: str = "r1", number: str = "+31612345678", **extra: object) -> dict[str, object]:
    return {
        "from": "Bank",
        "to": [{"number": number}],
        "body": {"content": "hi"},
        "reference": reference,
        **extra,
    }


def post(payload: bytes) -> Request:
    return Request(method="POST", path="/v1.0/message", query="", headers={}, body=payload, keep_alive=True)


def test_parse_submit_reads_token_and_messages() -> None:
    token, submitted = parse_submit(body(msg("a"), msg("b", validity="2030-01-01T00:00:00+00:00"), token="x"))
    assert token == "x"
    assert [s.reference for s in submitted] == ["a", "b"]
    assert submitted[0].validity_epoch_s is None
    assert submitted[1].validity_epoch_s == 1893456000.0


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (b"nope", "not JSON"),
        (b"{}", '"messages"'),
        (orjson.dumps({"messages": {"msg": [msg()]}}), "producttoken"),
        (body(), "non-empty"),
        (body(*[msg(str(n)) for n in range(101)]), "at most 100"),
        (body({"from": "", "to": [], "body": {}, "reference": "r"}), "from"),
        (body({**msg(), "to": [{"number": "1"}, {"number": "2"}]}), "list of one"),
        (body({**msg(), "body": {"content": 5}}), "content"),
        (body({**msg(), "reference": ""}), "reference"),
        (body(msg(validity="tomorrow")), "ISO-8601"),
    ],
)
def test_parse_submit_names_the_problem(payload: bytes, complaint: str) -> None:
    with pytest.raises(Malformed, match=complaint):
        parse_submit(payload)


def test_parse_fault_defaults_and_errors() -> None:
    assert parse_fault({"mode": "slow"}) == Fault(mode=FaultMode.SLOW, latency_ms=1000, share=1.0)
    assert parse_fault({"mode": "reject", "share": 0.25}).share == 0.25
    with pytest.raises(ValidationFailed) as caught:
        parse_fault({"mode": "boom", "share": -1, "latency_ms": "x", "extra": 1})
    assert {e["field"] for e in caught.value.errors} == {"mode", "share", "latency_ms", "extra"}


def test_counters_count_duplicates_and_keep_first_order() -> None:
    counters = Counters()
    for reference in ["b", "a", "b", "c", "a"]:
        counters.record(reference, accepted=reference != "c")
    assert counters.stats() == {"received": 5, "unique": 3, "duplicates": 2, "accepted": 4, "rejected": 1}
    assert counters.references() == ["b", "a", "c"]
    counters.reset()
    assert counters.stats()["received"] == 0
    assert counters.references() == []


def test_segments() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("é" * 70) == 1
    assert segments("é" * 71) == 2


def answer_of(api: PlatformApi, payload: bytes) -> tuple[int, dict[str, Any]]:
    response = asyncio.run(api.handle(post(payload)))
    assert response is not None
    return response.status, orjson.loads(response.body)


def test_invalid_number_and_past_validity_are_rejected_and_counted() -> None:
    counters = Counters()
    api = PlatformApi(counters=counters, token=None)
    status, answer = answer_of(
        api, body(msg("ok"), msg("bad", number="0612"), msg("old", validity="2001-01-01T00:00:00+00:00"))
    )
    assert status == 200
    statuses = [(m["reference"], m["status"]) for m in answer["messages"]]
    assert statuses == [("ok", "Accepted"), ("bad", "Rejected"), ("old", "Rejected")]
    assert counters.stats()["rejected"] == 2


def test_reject_fault_is_deterministic_per_reference() -> None:
    api = PlatformApi(counters=Counters(), token=None)
    api.fault = Fault(mode=FaultMode.REJECT, share=0.3)
    payload = body(*[msg(f"r{n}") for n in range(100)])
    first = answer_of(api, payload)[1]["messages"]
    second = answer_of(api, payload)[1]["messages"]
    assert first == second
    rejected = sum(1 for m in first if m["status"] == "Rejected")
    assert 10 <= rejected <= 50


def test_flaky_and_error_take_nothing() -> None:
    counters = Counters()
    api = PlatformApi(counters=counters, token=None, rng=random.Random(7))
    api.fault = Fault(mode=FaultMode.FLAKY, share=1.0)
    assert answer_of(api, body(msg()))[0] == 503
    api.fault = Fault(mode=FaultMode.ERROR)
    status, answer = answer_of(api, body(msg()))
    assert status == 500
    assert answer["errorCode"] != 0
    assert counters.received == 0


def test_token_is_checked_only_when_configured() -> None:
    assert answer_of(PlatformApi(counters=Counters(), token="s"), body(msg(), token="x"))[0] == 401
    assert answer_of(PlatformApi(counters=Counters(), token="s"), body(msg(), token="s"))[0] == 200
    assert answer_of(PlatformApi(counters=Counters(), token=None), body(msg(), token="x"))[0] == 200


def test_blackhole_never_answers() -> None:
    api = PlatformApi(counters=Counters(), token=None)
    api.fault = Fault(mode=FaultMode.BLACKHOLE)
    assert asyncio.run(api.handle(post(body(msg())))) is None
