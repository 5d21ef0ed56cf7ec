"""The cache of recipient-number verdicts: bounded, and giving what parsing again would give."""

from __future__ import annotations

import phonenumbers
import pytest

from ingress.content_checks import number_kind_problem, number_text_problem
from ingress.validation import NUMBER_CACHE_ENTRIES, canonical_number, validate_message
from shared.errors import ValidationFailed
from shared.guard_settings import NumberType
from shared.settings import IngressSettings

NUMBERS = [
    "+31612345678",
    "0612345678",
    "06 1234 5678",
    "(202) 555-0143",
    "+1 202-555-0143",
    "+31",
    "+316123456789012",
    "+999123456",
    "hello",
    "+31612345678 ext. 12",
    "+31 20 123 4567",  # fixed line
    "+31 900 1234567",  # premium rate
    "+31 85 123 4567",  # VoIP
    "0800 1234567",  # toll free
    "++31612345678",
    "+",
    "1",
    "+31612345678#",
]
REGIONS = ["NL", "US", "ZZ"]
BLOCKED: list[tuple[NumberType, ...]] = [
    (),
    (NumberType.PREMIUM_RATE, NumberType.VOIP),
    (NumberType.FIXED_LINE, NumberType.TOLL_FREE),
]


def parsed_afresh(value: str, region: str, blocked: tuple[NumberType, ...]) -> tuple[str | None, str | None]:
    """The verdict as the submit path gave it before the cache, written out again here."""
    refused = number_text_problem(value)
    if refused is not None:
        return None, refused
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number: {exc._msg}"
    if not phonenumbers.is_valid_number(parsed):
        return None, "not a valid phone number"
    refused = number_kind_problem(parsed, list(blocked))
    if refused is not None:
        return None, refused
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("blocked", BLOCKED)
def test_cached_verdicts_are_the_ones_parsing_gives(region: str, blocked: tuple[NumberType, ...]) -> None:
    canonical_number.cache_clear()
    expected = [parsed_afresh(n, region, blocked) for n in NUMBERS]
    assert [canonical_number(n, region, blocked) for n in NUMBERS] == expected  # parsed, then kept
    assert [canonical_number(n, region, blocked) for n in NUMBERS] == expected  # from the cache
    assert canonical_number.cache_info().hits == len(NUMBERS)
    # Both kinds of verdict are exercised: accepted numbers and refused ones, for every reason.
    assert any(number for number, _ in expected) and any(why for _, why in expected)


def test_the_region_and_blocked_kinds_are_part_of_the_key() -> None:
    canonical_number.cache_clear()
    assert canonical_number("0612345678", "NL", ())[0] == "+31612345678"
    assert canonical_number("0612345678", "US", ())[0] is None
    assert canonical_number("+31 85 123 4567", "NL", ())[1] is None
    assert canonical_number("+31 85 123 4567", "NL", (NumberType.VOIP,)) == (
        None,
        "voip numbers are not accepted",
    )


def test_validation_errors_are_the_same_from_the_cache() -> None:
    settings = IngressSettings(max_segments=3, default_validity_s=600, max_validity_s=3600)

    def errors(to: str) -> list[dict[str, str]]:
        with pytest.raises(ValidationFailed) as caught:
            validate_message({"to": to, "from": "X", "body": "b"}, settings, field_prefix="messages[3].")
        return caught.value.errors

    canonical_number.cache_clear()
    for bad in ("+31", "hello", "+999123456", "+31612345678 ext. 12"):
        first = errors(bad)
        assert first == errors(bad)
        assert [e["field"] for e in first] == ["messages[3].to"]
    assert validate_message({"to": "0612345678", "from": "X", "body": "b"}, settings).to == "+31612345678"


def test_the_cache_is_bounded() -> None:
    canonical_number.cache_clear()
    for n in range(NUMBER_CACHE_ENTRIES + 100):
        canonical_number(f"no number {n}", "NL", ())
    info = canonical_number.cache_info()
    assert info.maxsize == NUMBER_CACHE_ENTRIES
    assert info.currsize == NUMBER_CACHE_ENTRIES
    # The oldest were evicted, the newest kept.
    canonical_number("no number 0", "NL", ())
    canonical_number(f"no number {NUMBER_CACHE_ENTRIES + 99}", "NL", ())
    after = canonical_number.cache_info()
    assert (after.misses - info.misses, after.hits - info.hits) == (1, 1)
