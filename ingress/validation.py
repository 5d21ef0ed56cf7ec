"""Checks one submitted message and puts it in canonical form (E.164 number, segment count)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers

from ingress.content_checks import number_kind_problem, number_text_problem, text_problems
from ingress.segments import count_segments
from shared.callbacks.guard import CallbackRefused, parse_url
from shared.errors import ValidationFailed
from shared.guard_settings import NumberType
from shared.settings import IngressSettings

_ALPHANUMERIC_SENDER = re.compile(r"^[A-Za-z0-9 .\-]{1,11}$")
_NUMERIC_SENDER = re.compile(r"^\+?[0-9]{1,16}$")
MAX_REFERENCE_CHARS = 128
NUL = "\x00"  # no SMS needs one, and PostgreSQL's text cannot hold it
FIELDS = frozenset({"to", "from", "body", "reference", "validity_s", "callback_url"})
# Recipients repeat (one-time codes go to the same users again and again) and parsing a number was the
# costliest step of a submit, so the verdicts on recent numbers are kept: at most this many, least
# recently used evicted first (about 4 MB full). A flood of distinct numbers only churns it.
NUMBER_CACHE_ENTRIES = 16_384


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidMessage:
    to: str  # E.164
    sender: str
    body: str
    reference: str | None
    validity_s: int
    segments: int
    encoding: str
    # Checked here for its form only; where its host resolves is checked by `ingress.callback_check`.
    callback_url: str | None = None


def _error(field: str, message: str, prefix: str) -> dict[str, str]:
    return {"field": f"{prefix}{field}", "message": message}


def validate_message(item: Any, settings: IngressSettings, *, field_prefix: str = "") -> ValidMessage:
    """The message in canonical form, or `ValidationFailed` naming every bad field."""
    if not isinstance(item, dict):
        raise ValidationFailed([_error("", "must be a JSON object", field_prefix.rstrip("."))])
    errors: list[dict[str, str]] = []
    for name in sorted(set(item) - FIELDS):
        errors.append(_error(name, "unknown field", field_prefix))

    to = _number(item.get("to"), settings, field_prefix, errors)
    sender = _sender(item.get("from"), field_prefix, errors)
    body, segments, encoding = _body(item.get("body"), settings.max_segments, field_prefix, errors)

    reference = item.get("reference")
    if reference is not None and (
        not isinstance(reference, str) or len(reference) > MAX_REFERENCE_CHARS or NUL in reference
    ):
        errors.append(
            _error(
                "reference",
                f"must be a string of at most {MAX_REFERENCE_CHARS} characters, without NUL",
                field_prefix,
            )
        )

    validity_s = item.get("validity_s", settings.default_validity_s)
    if (
        not isinstance(validity_s, int)
        or isinstance(validity_s, bool)
        or not 1 <= validity_s <= settings.max_validity_s
    ):
        errors.append(
            _error("validity_s", f"must be an integer from 1 to {settings.max_validity_s}", field_prefix)
        )

    callback_url = item.get("callback_url")
    if callback_url is not None:
        try:
            parse_url(callback_url)
        except CallbackRefused as exc:
            errors.append(_error("callback_url", str(exc), field_prefix))

    errors.extend(text_problems(item, field_prefix, errors))
    if errors:
        raise ValidationFailed(errors)
    assert to is not None and sender is not None and body is not None
    return ValidMessage(
        to=to,
        sender=sender,
        body=body,
        reference=reference,
        validity_s=validity_s,
        segments=segments,
        encoding=encoding,
        callback_url=callback_url,
    )


def _number(value: Any, settings: IngressSettings, prefix: str, errors: list[dict[str, str]]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(_error("to", "a phone number is required", prefix))
        return None
    number, refused = canonical_number(value, settings.default_region, tuple(settings.blocked_number_types))
    if refused is not None:
        errors.append(_error("to", refused, prefix))
    return number


@lru_cache(maxsize=NUMBER_CACHE_ENTRIES)
def canonical_number(
    value: str, region: str, blocked: tuple[NumberType, ...]
) -> tuple[str | None, str | None]:
    """The number in E.164 and None, or None and why it is refused: a pure function of its arguments,
    so a cached verdict is the one parsing again would give."""
    refused = number_text_problem(value)
    if refused is not None:
        return None, refused
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"not a phone number: {exc._msg}"
    if not phonenumbers.is_valid_number(parsed):
        return None, "not a valid phone number"
    refused = number_kind_problem(parsed, blocked)
    if refused is not None:
        return None, refused
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def _sender(value: Any, prefix: str, errors: list[dict[str, str]]) -> str | None:
    if not isinstance(value, str) or not (
        _NUMERIC_SENDER.fullmatch(value) or _ALPHANUMERIC_SENDER.fullmatch(value)
    ):
        errors.append(_error("from", "must be 1-11 letters/digits or 1-16 digits", prefix))
        return None
    return value


def _body(
    value: Any, max_segments: int, prefix: str, errors: list[dict[str, str]]
) -> tuple[str | None, int, str]:
    if not isinstance(value, str) or not value or NUL in value:
        errors.append(_error("body", "must be a non-empty string without NUL characters", prefix))
        return None, 0, ""
    count = count_segments(value)
    if count.segments > max_segments:
        errors.append(
            _error(
                "body",
                f"takes {count.segments} {count.encoding} segments; at most {max_segments} are allowed",
                prefix,
            )
        )
        return None, 0, ""
    return value, count.segments, count.encoding
