"""The guard's parts on their own: content checks, the API-key cache's bounds, tenants' policies and
token buckets, and the RateLimit fields."""

from __future__ import annotations

import time

import pytest

from ingress import public_texts
from ingress.auth import MAX_ENTRIES, KeyCache
from ingress.rate_buckets import Bucket, LocalBuckets
from ingress.tenant_guard import policy_of, rate_limit_policy, rate_limit_value
from ingress.validation import validate_message
from shared.errors import ValidationFailed
from shared.guard_settings import GuardSettings, NumberType
from shared.settings import IngressSettings, StoreSettings
from shared.store.api_keys import create_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.tenant_limits import Limits

SETTINGS = IngressSettings()


def errors_of(item: dict[str, object], settings: IngressSettings = SETTINGS) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_message({"to": "+31612345678", "from": "MyBank", "body": "b", **item}, settings)
    return {e["field"]: e["message"] for e in caught.value.errors}


# NUL has a refusal of its own (the store cannot hold it), so it is not among these.
@pytest.mark.parametrize("char", ["\x07", "\x1b", "\x7f", "\x85", "\x0b", "\x01"])
@pytest.mark.parametrize("field", ["body", "reference"])
def test_control_characters_are_refused_but_newline_return_and_tab_are_text(field: str, char: str) -> None:
    errors = errors_of({field: f"a{char}b"})
    assert set(errors) == {field} and f"U+{ord(char):04X}" in errors[field]
    assert (
        validate_message(
            {"to": "+31612345678", "from": "MyBank", "body": "a\nb\r\nc\td", "reference": "r\t1"}, SETTINGS
        ).body
        == "a\nb\r\nc\td"
    )


@pytest.mark.parametrize("sender", [" ", "   ", "...", "- .", "-"])
def test_a_sender_of_only_spaces_or_punctuation_is_refused(sender: str) -> None:
    assert errors_of({"from": sender}) == {"from": "must hold a letter or a digit"}


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("+3161234567a", "letters are not allowed in a phone number"),
        ("+1 800 FLOWERS", "letters are not allowed in a phone number"),
        ("+31 6 1234 5678 ext. 12", "a number with an extension cannot receive an SMS"),
        ("+31612345678;ext=1", "a number with an extension cannot receive an SMS"),
        ("+31900123456", "premium-rate numbers are not accepted"),
        ("+31800 1234567", "toll-free numbers are not accepted"),
        ("+3184 123 4567", "uan numbers are not accepted"),
    ],
)
def test_numbers_with_letters_an_extension_or_a_blocked_kind_are_refused(number: str, reason: str) -> None:
    assert errors_of({"to": number}) == {"to": reason}


def test_the_blocked_kinds_are_a_setting() -> None:
    open_to_all = SETTINGS.model_copy(update={"blocked_number_types": []})
    assert (
        validate_message({"to": "+31900123456", "from": "X", "body": "b"}, open_to_all).to == "+31900123456"
    )
    no_voip = SETTINGS.model_copy(update={"blocked_number_types": [NumberType.VOIP]})
    assert errors_of({"to": "+31 85 123 4567"}, no_voip) == {"to": "voip numbers are not accepted"}


async def test_a_flood_of_unknown_keys_evicts_no_known_one(tmp_path, store_url) -> None:
    engine = make_engine(StoreSettings(url=store_url))
    sessions = make_sessionmaker(engine)
    try:
        key, _ = await create_key(sessions, tenant="acme")
        cache = KeyCache(sessions=sessions)
        assert await cache.tenant(key) == "acme"
        for n in range(MAX_ENTRIES + 50):
            assert await cache.tenant(f"rk_made_up_{n}") is None
        await engine.dispose()  # the store is gone: only the cache can answer now
        assert await cache.tenant(key) == "acme"
        assert await cache.tenant(f"rk_made_up_{MAX_ENTRIES + 49}") is None  # a miss is cached too
    finally:
        await engine.dispose()


def test_a_tenants_own_limits_win_over_the_defaults() -> None:
    defaults = GuardSettings(default_per_second=10, default_max_open=50)
    assert policy_of(None, defaults).bucket == Bucket(per_second=10, burst=10)
    own = policy_of(Limits(tenant="t", per_second=2.5, max_queued=100), defaults)
    assert (own.per_second, own.burst, own.max_open, own.max_queued) == (2.5, 3, 50, 100)
    assert policy_of(Limits(tenant="t", per_second=0), defaults).bucket is None  # 0: no limit


def test_a_local_bucket_gives_its_burst_then_its_rate() -> None:
    buckets, bucket = LocalBuckets(), Bucket(per_second=20, burst=5)
    assert buckets.take("t", bucket, 5).decision.allowed
    refused = buckets.take("t", bucket, 1)
    assert not refused.decision.allowed and 0 < (refused.decision.retry_after_ms or 0) <= 50
    assert buckets.take("other", bucket, 5).decision.allowed  # tenants do not share
    emptied = time.monotonic()
    time.sleep(0.12)
    allowed = sum(buckets.take("t", bucket, 1).decision.allowed for _ in range(10))
    assert 2 <= allowed <= min(5, 1 + (time.monotonic() - emptied) * 20)
    assert not buckets.take("t", bucket, 6).decision.allowed  # more than the burst never fits


def test_a_local_bucket_outlives_a_reread_limit_but_not_a_changed_one() -> None:
    buckets = LocalBuckets()
    assert buckets.take("t", Bucket(per_second=1, burst=2), 2).decision.allowed
    # Each refresh of the limits may bring another object of the same limit: the tokens stay spent.
    again = buckets.take("t", Bucket(per_second=1, burst=2), 1)
    assert not again.decision.allowed and again.remaining == 0
    assert buckets.take("t", Bucket(per_second=1, burst=3), 3).decision.allowed  # changed: a fresh bucket


def test_ratelimit_fields_follow_the_draft() -> None:
    buckets, bucket = LocalBuckets(), Bucket(per_second=2, burst=10)
    verdict = buckets.take("t", bucket, 4)
    assert rate_limit_policy(bucket) == b'"messages";q=10;w=5'
    assert rate_limit_value(verdict) == b'"messages";r=6;t=2'
    assert policy_of(Limits(tenant="t", per_second=2, burst=10), GuardSettings()).policy_field == (
        rate_limit_policy(bucket)
    )


@pytest.mark.parametrize(
    ("outcome", "detail", "text"),
    [
        ("accepted", "HTTP 200 id=abc at 10.1.2.3", public_texts.ACCEPTED),
        ("rejected", "ESME_RINVDSTADR from smsc-7.internal", public_texts.REJECTED),
        ("expired", "", public_texts.EXPIRED),
        ("ambiguous", "answer lost: ReadTimeout 10.0.0.5:13013", public_texts.AMBIGUOUS),
        ("unavailable", "HTTP 401: bad token for user relay", public_texts.AUTHENTICATION),
        ("unavailable", "403 Authorization failed for sendsms", public_texts.AUTHENTICATION),
        ("unavailable", "bind refused: ESME_RINVPASWD", public_texts.AUTHENTICATION),
        ("unavailable", "not sent: connect timed out to 10.0.0.5:13013", public_texts.TIMEOUT),
        ("unavailable", "not sent: ConnectionRefusedError(111)", public_texts.REFUSED),
        ("unavailable", "HTTP 503: upstream gw-2.internal:8443 overloaded", public_texts.SERVER_ERROR),
        ("unavailable", "something new", public_texts.UNAVAILABLE),
    ],
)
def test_tenants_get_a_fixed_text_per_kind_of_failure(outcome: str, detail: str, text: str) -> None:
    assert public_texts.public_detail(outcome, detail) == text
