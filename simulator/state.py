"""What the simulated platform remembers: its current fault and the references it received."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.errors import ValidationFailed


class FaultMode(StrEnum):
    NONE = "none"
    DOWN = "down"  # the platform port refuses connections
    BLACKHOLE = "blackhole"  # requests are read and never answered (nothing is taken)
    ERROR = "error"  # 500 for every request, nothing is taken
    SLOW = "slow"  # answers after latency_ms; messages are taken on arrival
    REJECT = "reject"  # a share of messages is rejected for good (still counted as received)
    FLAKY = "flaky"  # 503 for a share of requests, nothing of those is taken


DEFAULT_SLOW_LATENCY_MS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    mode: FaultMode = FaultMode.NONE
    latency_ms: int = 0
    share: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "latency_ms": self.latency_ms, "share": self.share}


def parse_fault(data: object) -> Fault:
    """Read the body of POST /faults, or raise `ValidationFailed` naming each bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "body", "message": "must be a JSON object"}])
    errors: list[dict[str, str]] = []
    unknown = set(data) - {"mode", "latency_ms", "share"}
    if unknown:
        errors.append({"field": ",".join(sorted(unknown)), "message": "unknown field"})
    mode = FaultMode.NONE
    try:
        mode = FaultMode(str(data.get("mode")))
    except ValueError:
        errors.append({"field": "mode", "message": f"one of {', '.join(m.value for m in FaultMode)}"})
    latency_ms = data.get("latency_ms", DEFAULT_SLOW_LATENCY_MS if mode is FaultMode.SLOW else 0)
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int) or not 0 <= latency_ms <= 600_000:
        errors.append({"field": "latency_ms", "message": "an integer from 0 to 600000"})
    share = data.get("share", 1.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        errors.append({"field": "share", "message": "a number from 0 to 1"})
    if errors:
        raise ValidationFailed(errors)
    return Fault(mode=mode, latency_ms=int(latency_ms), share=float(share))


class Counters:
    """Messages received, by reference; a reference seen again is a duplicate."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._order: list[str] = []  # references in order of first receipt
        self.received = 0
        self.accepted = 0
        self.rejected = 0

    def record(self, reference: str, *, accepted: bool) -> None:
        self.received += 1
        if accepted:
            self.accepted += 1
        else:
            self.rejected += 1
        if reference not in self._seen:
            self._seen.add(reference)
            self._order.append(reference)

    @property
    def unique(self) -> int:
        return len(self._order)

    def references(self, since: int = 0) -> list[str]:
        """Unique references in order of first receipt, from position `since` on."""
        return self._order[since:]

    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "unique": self.unique,
            "duplicates": self.received - self.unique,
            "accepted": self.accepted,
            "rejected": self.rejected,
        }

    def reset(self) -> None:
        self._seen.clear()
        self._order.clear()
        self.received = self.accepted = self.rejected = 0
