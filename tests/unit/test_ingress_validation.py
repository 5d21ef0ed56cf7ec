"""Segment counting, message validation and routing (pure functions), and validation against the store's
columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import phonenumbers
import pytest
from sqlalchemy import String

from ingress.idempotency import MAX_KEY_CHARS, request_hash
from ingress.routing import Router
from ingress.segments import count_segments
from ingress.validation import validate_message
from shared.callbacks.guard import MAX_URL_CHARS
from shared.callbacks.signing import new_secret
from shared.callbacks.wire import CallbackDeadReason, event_id
from shared.errors import ConfigError, PermanentError, ValidationFailed
from shared.model import DeadReason, DeliveryReport, Outcome, ReportState, Status, new_message_ids
from shared.settings import (
    IngressSettings,
    PlatformKind,
    RoutingSettings,
    Settings,
    SiteSettings,
    StoreSettings,
)
from shared.store.accounts import new_account_sid
from shared.store.api_keys import PREFIX_CHARS, create_key, hash_key, new_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.models import Base
from shared.store.recording import WORKER_CHARS
from shared.store.report_rows import ERROR_CODE_CHARS, PLATFORM_ID_CHARS, PLATFORM_STATUS_CHARS


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


def test_nul_characters_are_refused_where_the_store_could_not_keep_them() -> None:
    assert set(errors_of({"to": "+31612345678", "from": "X", "body": "a\x00b", "reference": "r\x00"})) == {
        "body",
        "reference",
    }


def _longest(accepts: Callable[[str], bool], *shapes: Callable[[int], str], up_to: int = 300) -> int:
    """The length of the longest value of any of `shapes` that `accepts` takes, trying every length."""
    longest = max((n for shape in shapes for n in range(1, up_to) if accepts(shape(n))), default=0)
    assert longest < up_to - 1, f"no limit found: {shapes[0](up_to - 1)!r} is accepted"
    return longest


def _valid(**fields: object) -> bool:
    try:
        validate_message({"to": "+31612345678", "from": "X", "body": "b", **fields}, SETTINGS)
    except ValidationFailed:
        return False
    return True


def _site_name_valid(name: str) -> bool:
    try:
        Settings(sites={name: SiteSettings(url="http://127.0.0.1:1/")})
    except ValueError:
        return False
    return True


def _longest_valid_number() -> int:
    """'+', the country code and the longest national number phonenumbers takes as valid, anywhere."""
    regions = [phonenumbers.PhoneMetadata.metadata_for_region(r) for r in phonenumbers.SUPPORTED_REGIONS]
    regions += [
        phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    return max(1 + len(str(m.country_code)) + max(m.general_desc.possible_length) for m in regions)


async def _longest_tenant(store_url: str) -> int:
    engine = make_engine(StoreSettings(url=store_url))
    sessions = make_sessionmaker(engine)

    async def accepts(tenant: str) -> bool:
        try:
            await create_key(sessions, tenant=tenant)
        except PermanentError:
            return False
        return True

    accepted = [n for n in range(1, 300) if await accepts("t" * n)]
    await engine.dispose()
    return _longest(lambda t: len(t) in accepted, lambda n: "t" * n)


async def test_every_text_column_holds_the_longest_value_validation_lets_through(store_url) -> None:
    """Each string column of every model against the longest value that can reach it: PostgreSQL
    refuses a longer one, and with it every row of the same commit."""
    tenant = await _longest_tenant(store_url)
    site = _longest(_site_name_valid, lambda n: "s" * n)
    sender = _longest(lambda s: _valid(**{"from": s}), lambda n: "+" + "1" * (n - 1), lambda n: "A" * n)
    reference = _longest(lambda r: _valid(reference=r), lambda n: "r" * n)
    to_number = _longest_valid_number()
    message_id = max(len(i) for i in new_message_ids(100))
    encoding = max(len(count_segments(text).encoding) for text in ("a", "ж", "€"))
    status = max(len(s.value) for s in Status)
    limits = {
        ("api_keys", "tenant"): tenant,
        ("api_keys", "key_hash"): len(hash_key(new_key())),
        ("api_keys", "key_prefix"): PREFIX_CHARS,
        ("messages", "id"): message_id,
        ("messages", "tenant"): tenant,
        ("messages", "to_number"): to_number,
        ("messages", "sender"): sender,
        ("messages", "client_reference"): reference,
        ("messages", "encoding"): encoding,
        ("messages", "site"): site,
        ("messages", "status"): status,
        ("attempts", "message_id"): message_id,
        ("attempts", "site"): site,
        ("attempts", "outcome"): max(len(o.value) for o in Outcome),
        ("attempts", "worker"): WORKER_CHARS,
        ("dead_letters", "message_id"): message_id,
        ("dead_letters", "tenant"): tenant,
        ("dead_letters", "site"): site,
        ("dead_letters", "reason"): max(len(r.value) for r in DeadReason),
        ("dead_letters", "replayed_to_site"): site,
        ("idempotency_keys", "tenant"): tenant,
        ("idempotency_keys", "key"): MAX_KEY_CHARS,
        ("idempotency_keys", "request_hash"): len(request_hash("/v1/messages", {})),
        ("tenant_accounts", "tenant"): tenant,
        ("tenant_accounts", "account_sid"): len(new_account_sid()),
        ("tenant_limits", "tenant"): tenant,
        ("messages", "callback_url"): MAX_URL_CHARS,
        ("tenant_callbacks", "tenant"): tenant,
        ("tenant_callbacks", "callback_url"): MAX_URL_CHARS,
        ("tenant_callbacks", "secret"): len(new_secret()),
        ("tenant_callbacks", "previous_secret"): len(new_secret()),
        ("callback_dead_letters", "event_id"): len(event_id(new_message_ids(1)[0], "delivered")),
        ("callback_dead_letters", "message_id"): message_id,
        ("callback_dead_letters", "tenant"): tenant,
        ("callback_dead_letters", "url"): MAX_URL_CHARS,
        ("callback_dead_letters", "status"): status,
        ("callback_dead_letters", "reason"): max(len(r.value) for r in CallbackDeadReason),
        # Reports: what the fold writes is cut to these widths (`shared.store.report_rows.report_row`).
        ("reports", "key"): len(
            DeliveryReport(site="a", platform="smpp", message_id="", attempt=0, state=ReportState.SENT).key
        ),
        ("reports", "message_id"): message_id,
        ("reports", "site"): site,
        ("reports", "platform"): max(len(k.value) for k in PlatformKind),
        ("reports", "state"): max(len(r.value) for r in ReportState),
        ("reports", "platform_status"): PLATFORM_STATUS_CHARS,
        ("reports", "error_code"): ERROR_CODE_CHARS,
        ("reports", "platform_id"): PLATFORM_ID_CHARS,
    }
    widths = {
        (table.name, column.name): column.type.length
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String) and column.type.length is not None
    }
    assert set(limits) == set(widths), "a new text column needs its validated limit here"
    too_long = {name: (limits[name], width) for name, width in widths.items() if limits[name] > width}
    assert too_long == {}
