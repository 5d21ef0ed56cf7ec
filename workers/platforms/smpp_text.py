"""A job's text as SMPP submit_sm fields: data_coding by content, segments with a concatenation UDH or one
message_payload, addresses with their TON/NPI, and a relative validity_period."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import gsm0338  # noqa: F401  registers the "gsm03.38" codec

from shared.smpp import CODING_DEFAULT, CODING_UCS2, MAX_SHORT_MESSAGE_BYTES

UDH_CONCAT_BYTES = 6  # 05 00 03 <reference> <total> <number>
# Segment sizes in octets as SMPP carries them (GSM: one septet per octet; the SMSC packs 160 into 140).
GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = MAX_SHORT_MESSAGE_BYTES, MAX_SHORT_MESSAGE_BYTES - UDH_CONCAT_BYTES
MAX_PARTS = 255
# Address type of number / numbering plan: international E.164, or an alphanumeric sender.
TON_INTERNATIONAL, NPI_E164 = 1, 1
TON_ALPHANUMERIC, NPI_UNKNOWN = 5, 0
MAX_RELATIVE_DAYS = 99  # validity_period's DD field has two digits


@dataclass(frozen=True, slots=True)
class Encoded:
    data_coding: int
    units: list[bytes]  # the text in its coding, one entry per character (an escape pair stays one)

    @property
    def size(self) -> int:
        return sum(map(len, self.units))

    def payload(self) -> bytes:
        return b"".join(self.units)


def encode_text(text: str, encoding: str) -> Encoded:
    """GSM 03.38 (a septet per octet; the SMSC packs them) where the ingress found it fits, else UCS-2."""
    if encoding == "gsm7":
        try:
            return Encoded(CODING_DEFAULT, [ch.encode("gsm03.38") for ch in text])
        except UnicodeEncodeError:
            pass  # the ingress's table and the codec disagree on a character: UCS-2 carries anything
    return Encoded(CODING_UCS2, [ch.encode("utf-16-be") for ch in text])


def split(encoded: Encoded) -> list[bytes]:
    """The octets of each segment, without headers; one segment when the text fits whole.

    A character is never cut: an escape pair or a surrogate pair stays in one segment."""
    gsm = encoded.data_coding == CODING_DEFAULT
    if encoded.size <= (GSM7_SINGLE if gsm else UCS2_SINGLE):
        return [encoded.payload()]
    limit = GSM7_PART if gsm else UCS2_PART
    parts: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for unit in encoded.units:
        if size + len(unit) > limit:
            parts.append(b"".join(current))
            current, size = [], 0
        current.append(unit)
        size += len(unit)
    parts.append(b"".join(current))
    return parts


def with_udh(parts: list[bytes], reference: int) -> Iterator[bytes]:
    """Each part behind its concatenation header (8-bit reference)."""
    total = len(parts)
    for number, part in enumerate(parts, start=1):
        yield bytes((5, 0, 3, reference & 0xFF, total, number)) + part


_references = itertools.count()


def next_reference() -> int:
    return next(_references) & 0xFF


def address(value: str) -> tuple[int, int, str]:
    """TON, NPI and digits of an address: E.164 numbers international, anything else alphanumeric."""
    digits = value.removeprefix("+")
    if digits.isdigit():
        return TON_INTERNATIONAL, NPI_E164, digits
    return TON_ALPHANUMERIC, NPI_UNKNOWN, value


def relative_validity(remaining_s: float) -> str:
    """SMPP's relative time format `YYMMDDhhmmss000R`, rounded up to the minute so the SMSC never gives
    up before the relay would; at least one minute, at most 99 days."""
    minutes = max(1, -(-int(remaining_s) // 60))
    days, minutes = divmod(minutes, 24 * 60)
    if days > MAX_RELATIVE_DAYS:
        days, minutes = MAX_RELATIVE_DAYS, 0
    hours, minutes = divmod(minutes, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}00000R"
