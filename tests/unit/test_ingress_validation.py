"""Segment counting, message validation and routing: pure functions, no services."""

from __future__ import annotations

from collections import Counter

import pytest

from ingress.routing import Router
from ingress.segments import count_segments
from ingress.validation import validate_message
from shared.errors import ConfigError, ValidationFailed
from shared.settings import IngressSettings, RoutingSettings


@pytest.mark.parametrize(
    ("text", "encoding", "segments", "units"),
    [
        ("a" * 160, "gsm7", 1, 160),
        ("a" * 161, "gsm7", 2, 161),
        ("a" * 306, "gsm7", 2, 306),
        ("a" * 307, "gsm7", 3, 307),
        ("€" * 80, "gsm7", 1, 160),  # extension characters take two septets
        ("€" * 81, "gsm7", 2, 162),
        # 152 septets, then an escape pair that does not fit in the 153rd septet: it opens part two.
        ("a" * 152 + "{" + "a" * 152, "gsm7", 3, 306),
        ("Grüße àé", "gsm7", 1, 8),
        ("ж" * 70, "ucs2", 1, 70),
        ("ж" * 71, "ucs2", 2, 71),
        ("ж" * 134, "ucs2", 2, 134),
        ("ж" * 135, "ucs2", 3, 135),
        ("😀" * 35, "ucs2", 1, 70),  # a surrogate pair is two code units
        ("a" * 66 + "😀" + "a" * 67, "ucs2", 3, 135),  # ... and is never split between parts
    ],
)
def test_segments(text: str, encoding: str, segments: int, units: int) -> None:
    count = count_segments(text)
    assert (count.encoding, count.segments, count.units) == (encoding, segments, units)


SETTINGS = IngressSettings(max_segments=3, default_validity_s=600, max_validity_s=3600)


def errors_of(item: object) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_message(item, SETTINGS)
    return {e["field"]: e["message"] for e in caught.value.errors}


def test_valid_message_is_canonical() -> None:
    valid = validate_message({"to": "0612345678", "from": "12345", "body": "hi €"}, SETTINGS)
    assert valid.to == "+31612345678"
    assert (valid.sender, valid.validity_s, valid.segments, valid.encoding) == ("12345", 600, 1, "gsm7")
    other_region = validate_message(
        {"to": "(202) 555-0143", "from": "X", "body": "b"},
        SETTINGS.model_copy(update={"default_region": "US"}),
    )
    assert other_region.to == "+12025550143"


@pytest.mark.parametrize("sender", ["MyBank", "A", "Bank 24", "12345678901234", "+3197010203"])
def test_good_senders(sender: str) -> None:
    assert validate_message({"to": "+31612345678", "from": sender, "body": "b"}, SETTINGS).sender == sender


@pytest.mark.parametrize("sender", ["", "TwelveCharsX", "12345678901234567", "Bänk", None, 42])
def test_bad_senders(sender: object) -> None:
    assert set(errors_of({"to": "+31612345678", "from": sender, "body": "b"})) == {"from"}


@pytest.mark.parametrize("number", ["", "+31", "+316123456789012", "hello", "+999123456", None, 31612345678])
def test_bad_numbers(number: object) -> None:
    assert set(errors_of({"to": number, "from": "X", "body": "b"})) == {"to"}


def test_every_bad_field_is_named_at_once() -> None:
    errors = errors_of(
        {"to": "x", "from": "", "body": "x" * (153 * 3 + 1), "reference": 5, "validity_s": 3601, "extra": 1}
    )
    assert set(errors) == {"to", "from", "body", "reference", "validity_s", "extra"}
    assert "4 gsm7 segments" in errors["body"]
    assert set(errors_of({"to": "+31612345678", "from": "X", "body": "b", "validity_s": True})) == {
        "validity_s"
    }
    assert errors_of([1, 2]) == {"": "must be a JSON object"}


def test_round_robin_follows_weights_smoothly() -> None:
    router = Router(settings=RoutingSettings(weights={"a": 2, "b": 1}), sites=["a", "b"])
    picks = [router.next_site() for _ in range(300)]
    assert Counter(picks) == {"a": 200, "b": 100}
    assert picks[:3] in (["a", "b", "a"], ["a", "a", "b"])
    assert "bb" not in "".join(picks)


def test_round_robin_default_weights_and_zero_weight() -> None:
    even = Router(settings=RoutingSettings(), sites=["a", "b", "c"])
    assert Counter(even.next_site() for _ in range(30)) == {"a": 10, "b": 10, "c": 10}
    drained = Router(settings=RoutingSettings(weights={"a": 0}), sites=["a", "b"])
    assert {drained.next_site() for _ in range(10)} == {"b"}
    with pytest.raises(ConfigError):
        Router(settings=RoutingSettings(weights={"a": 0, "b": 0}), sites=["a", "b"])


def test_primary_policy() -> None:
    assert {
        Router(settings=RoutingSettings(policy="primary", primary="b"), sites=["a", "b"]).next_site()
    } == {"b"}
    first = Router(settings=RoutingSettings(policy="primary"), sites=["b", "a"])
    assert {first.next_site() for _ in range(5)} == {"b"}
