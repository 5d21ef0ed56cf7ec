"""Checks of a message's content beyond its shape: what no SMS needs and a careless or hostile client
sends anyway. Called from `ingress.validation`, which names each bad field."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from shared.guard_settings import NumberType

# C0 and C1 controls and DEL; newline, carriage return and tab are text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LETTER = re.compile(r"[^\W\d_]")
# The extension marks phonenumbers reads: ";ext=", "ext.", "extension", "x", "#" before digits at the end.
_EXTENSION = re.compile(r"(?:;ext=|\bext\.?|extension|x|#)\s*\d+\s*#?$", re.IGNORECASE)
EXTENSION = "a number with an extension cannot receive an SMS"
_TEXT_FIELDS = ("from", "body", "reference")
_TYPES = {
    NumberType.PREMIUM_RATE: PhoneNumberType.PREMIUM_RATE,
    NumberType.SHARED_COST: PhoneNumberType.SHARED_COST,
    NumberType.TOLL_FREE: PhoneNumberType.TOLL_FREE,
    NumberType.UAN: PhoneNumberType.UAN,
    NumberType.VOICEMAIL: PhoneNumberType.VOICEMAIL,
    NumberType.PAGER: PhoneNumberType.PAGER,
    NumberType.VOIP: PhoneNumberType.VOIP,
    NumberType.PERSONAL_NUMBER: PhoneNumberType.PERSONAL_NUMBER,
    NumberType.FIXED_LINE: PhoneNumberType.FIXED_LINE,
}


def number_text_problem(value: str) -> str | None:
    """Why the text of a recipient number is refused before it is parsed, or None."""
    if _EXTENSION.search(value):
        return EXTENSION
    if _LETTER.search(value):
        return "letters are not allowed in a phone number"
    return None


def number_kind_problem(number: phonenumbers.PhoneNumber, blocked: Sequence[NumberType]) -> str | None:
    """Why a valid number is refused: an extension, or a kind of number blocked here; or None."""
    if number.extension is not None:
        return EXTENSION
    kind = phonenumbers.number_type(number)
    for name in blocked:
        if _TYPES[name] == kind:
            return f"{name} numbers are not accepted"
    return None


def text_problems(item: dict[str, Any], prefix: str, errors: list[dict[str, str]]) -> list[dict[str, str]]:
    """Control characters in the texts, and a sender with no letter or digit; fields already refused
    (named in `errors`) are left alone."""
    named = {error["field"] for error in errors}
    found = []
    for name in _TEXT_FIELDS:
        value = item.get(name)
        field = f"{prefix}{name}"
        if not isinstance(value, str) or field in named:
            continue
        control = _CONTROL.search(value)
        if control is not None:
            found.append(
                {
                    "field": field,
                    "message": f"holds the control character U+{ord(control.group()):04X}; only newline, "
                    "carriage return and tab are allowed",
                }
            )
        elif name == "from" and not any(c.isalnum() for c in value):
            found.append({"field": field, "message": "must hold a letter or a digit"})
    return found
