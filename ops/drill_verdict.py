"""The drill's verdict, computed from what it observed; pure arithmetic, no I/O.

Definitions (all times are wall-clock epoch seconds; receipt times have the resolution of the receipt
poll, about 0.1 s):

- accepted: drill messages the ingress answered 2xx with a message id.
- delivered: accepted ids some simulated platform received (each id once, whichever site).
- lost: accepted ids no simulator received and whose status is not a terminal failure the operator can
  see (`rejected`, `expired`, `dead`: those are dead letters with a reason, not losses). An id still
  `accepted`/`retrying` when the drill stops waiting counts as lost too (shown again as `unsettled`):
  the drill promises an answer within its bound.
- duplicates: ids received by more than one site, plus the increase of the simulators' own duplicate
  counters during the drill (repeats at one site).
- failover gap: the longest time a drill message was held up by the fault. For every message that was
  accepted before the fault was cleared and not yet received when the fault began, its wait is
  (first receipt anywhere) - max(its acceptance, fault start); the gap is the largest wait. Under
  round-robin routing the healthy site keeps receiving its own share during the fault, so a plain
  "longest silence across all sites" would hide the faulted site's stalled share; that silence is
  reported too, as `silence_gap_s` (the longest interval within the fault window with no drill
  message received by any site, measured between consecutive receipts and the window's ends).
- first receipt elsewhere: from the fault's start to the first drill message another site's platform
  received after it (`first_other_site_s`).
- recovery: from the fault being cleared until the faulted site's platform receives a drill message
  again.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SETTLED_FAILURES = frozenset({"rejected", "expired", "dead"})
UNSETTLED = frozenset({"accepted", "retrying"})
# A platform took it (`sent`), and a delivery report may have said more since: the relay's part is done.
TAKEN = frozenset({"sent", "delivered", "undelivered"})
EXIT_PASSED = 0
EXIT_LOST = 1
LOST_IDS_SHOWN = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    accepted: Mapping[str, float]  # id -> time of the 2xx
    receipts: Mapping[str, Mapping[str, float]]  # site -> id -> first time seen there
    statuses: Mapping[str, str]  # id -> status in the store, for ids no simulator received
    fault_site: str
    fault: str
    fault_at: float
    cleared_at: float
    duplicate_counter_increase: Mapping[str, int] = field(default_factory=dict)  # site -> increase
    ambiguous_attempts: int | None = None
    refused: Mapping[str, int] = field(default_factory=dict)
    delivered_status_counts: bool = False  # some platform is real: trust `delivered` statuses for it


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    fault: str
    fault_site: str
    accepted: int
    delivered: int
    delivered_per_site: dict[str, int]
    dead_lettered: dict[str, int]
    lost: int
    lost_ids: list[str]
    unsettled: int
    duplicates: int
    cross_site_duplicates: int
    ambiguous_attempts: int | None
    refused: dict[str, int]
    failover_gap_s: float | None
    silence_gap_s: float | None
    recovery_s: float | None
    first_other_site_s: float | None
    fault_duration_s: float

    @property
    def passed(self) -> bool:
        return self.lost == 0

    @property
    def exit_code(self) -> int:
        return EXIT_PASSED if self.passed else EXIT_LOST

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "fault": self.fault,
            "site": self.fault_site,
            "accepted": self.accepted,
            "delivered": self.delivered,
            "delivered_per_site": self.delivered_per_site,
            "dead_lettered": self.dead_lettered,
            "lost": self.lost,
            "lost_ids": self.lost_ids,
            "unsettled": self.unsettled,
            "duplicates": self.duplicates,
            "cross_site_duplicates": self.cross_site_duplicates,
            "ambiguous_attempts": self.ambiguous_attempts,
            "refused": self.refused,
            "failover_gap_s": _rounded(self.failover_gap_s),
            "silence_gap_s": _rounded(self.silence_gap_s),
            "recovery_s": _rounded(self.recovery_s),
            "first_other_site_s": _rounded(self.first_other_site_s),
            "fault_duration_s": _rounded(self.fault_duration_s),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def first_receipts(receipts: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """id -> earliest time any site received it."""
    first: dict[str, float] = {}
    for per_site in receipts.values():
        for message_id, at in per_site.items():
            if message_id not in first or at < first[message_id]:
                first[message_id] = at
    return first


def failover_gap(
    *, accepted: Mapping[str, float], first_receipt: Mapping[str, float], fault_at: float, cleared_at: float
) -> float | None:
    """Longest hold-up of a message by the fault (see the module's definition); None if none was affected."""
    waits = [
        received - max(accepted_at, fault_at)
        for message_id, accepted_at in accepted.items()
        if accepted_at < cleared_at
        and (received := first_receipt.get(message_id)) is not None
        and received >= fault_at
    ]
    return max(waits) if waits else None


def silence_gap(receipt_times: Iterable[float], *, start: float, end: float) -> float | None:
    """Longest interval in [start, end] with no receipt, counting the window's ends as boundaries."""
    if end <= start:
        return None
    points = [start, *sorted(t for t in receipt_times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def recovery_time(site_receipts: Mapping[str, float], *, cleared_at: float) -> float | None:
    """From clearing the fault to the faulted site's next receipt; None if it never received again."""
    after = [t for t in site_receipts.values() if t >= cleared_at]
    return min(after) - cleared_at if after else None


def first_elsewhere(
    receipts: Mapping[str, Mapping[str, float]], *, fault_site: str, fault_at: float
) -> float | None:
    """From the fault's start to the first receipt at any other site after it."""
    after = [t for site, r in receipts.items() if site != fault_site for t in r.values() if t >= fault_at]
    return min(after) - fault_at if after else None


def compute(observation: Observation) -> Verdict:
    o = observation
    accepted_ids = set(o.accepted)
    per_site = {site: {m: t for m, t in r.items() if m in accepted_ids} for site, r in o.receipts.items()}
    first = first_receipts(per_site)

    dead_lettered: dict[str, int] = {}
    lost_ids: list[str] = []
    unsettled = 0
    for message_id in sorted(accepted_ids - set(first)):
        status = o.statuses.get(message_id, "unknown")
        if status in SETTLED_FAILURES:
            dead_lettered[status] = dead_lettered.get(status, 0) + 1
        elif status in TAKEN and o.delivered_status_counts:
            dead_lettered.setdefault("delivered-unobserved", 0)
            dead_lettered["delivered-unobserved"] += 1
        else:
            lost_ids.append(message_id)
            if status in UNSETTLED:
                unsettled += 1

    sites_of: dict[str, int] = {}
    for per in per_site.values():
        for message_id in per:
            sites_of[message_id] = sites_of.get(message_id, 0) + 1
    cross_site = sum(1 for n in sites_of.values() if n > 1)

    return Verdict(
        fault=o.fault,
        fault_site=o.fault_site,
        accepted=len(accepted_ids),
        delivered=len(first),
        delivered_per_site={site: len(r) for site, r in sorted(per_site.items())},
        dead_lettered=dead_lettered,
        lost=len(lost_ids),
        lost_ids=lost_ids[:LOST_IDS_SHOWN],
        unsettled=unsettled,
        duplicates=cross_site + sum(max(0, n) for n in o.duplicate_counter_increase.values()),
        cross_site_duplicates=cross_site,
        ambiguous_attempts=o.ambiguous_attempts,
        refused=dict(o.refused),
        failover_gap_s=failover_gap(
            accepted=o.accepted, first_receipt=first, fault_at=o.fault_at, cleared_at=o.cleared_at
        ),
        silence_gap_s=silence_gap(first.values(), start=o.fault_at, end=o.cleared_at),
        recovery_s=recovery_time(per_site.get(o.fault_site, {}), cleared_at=o.cleared_at),
        first_other_site_s=first_elsewhere(per_site, fault_site=o.fault_site, fault_at=o.fault_at),
        fault_duration_s=o.cleared_at - o.fault_at,
    )
