"""How many SMS segments a text takes: GSM 03.38 7-bit where every character allows it, else UCS-2.

GSM-7: 160 septets in one segment, 153 per segment of a concatenated message; characters of the
extension table take two septets (escape + code) and never straddle two segments. UCS-2: 70 UTF-16
code units in one segment, 67 per part; a surrogate pair is never split.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7 = "gsm7"
UCS2 = "ucs2"

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67


@dataclass(frozen=True, slots=True)
class SegmentCount:
    encoding: str
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)


_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENSION


def is_gsm7(text: str) -> bool:
    return _GSM7_ALL.issuperset(text)


def count_segments(text: str) -> SegmentCount:
    # Whole-string set and codec operations first (C speed); the per-character list is built only for
    # the few texts that need more than one segment.
    if _GSM7_ALL.issuperset(text):
        extension = 0 if _GSM7_BASIC.issuperset(text) else sum(map(text.count, _GSM7_EXTENSION))
        total = len(text) + extension
        if total <= GSM7_SINGLE_SEPTETS:
            return SegmentCount(GSM7, 1 if total else 0, total)
        sizes = [2 if ch in _GSM7_EXTENSION else 1 for ch in text]
        return _split(sizes, encoding=GSM7, single=GSM7_SINGLE_SEPTETS, part=GSM7_PART_SEPTETS)
    total = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if total <= UCS2_SINGLE_UNITS:
        return SegmentCount(UCS2, 1, total)
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return _split(sizes, encoding=UCS2, single=UCS2_SINGLE_UNITS, part=UCS2_PART_UNITS)


def _split(sizes: list[int], *, encoding: str, single: int, part: int) -> SegmentCount:
    total = sum(sizes)
    if total <= single:
        return SegmentCount(encoding, 1 if total else 0, total)
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:  # characters are indivisible: start the next part
            segments += 1
            used = 0
        used += size
    return SegmentCount(encoding, segments, total)
