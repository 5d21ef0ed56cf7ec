"""Delivery reports the simulated platforms send, switchable through their admin APIs.

``POST /reports`` with ``{"outcome": "delivered" | "undelivered" | "none", "delay_ms": 0, "duplicates": 0,
"unknown": false}``: each message taken that asked for reports gets one report of that outcome after the
delay, sent `duplicates` more times again, and with `unknown` one more report naming an id the platform
never gave out. ``GET /reports`` shows the plan and what was sent; ``GET /reports/log`` (the HTTP
simulator) the reference and send time (epoch seconds) of each report sent, the latest `LOG_LENGTH` of
them (for the benchmarks' report-to-callback times).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from shared.errors import ValidationFailed
from simulator.http11 import Request, Response, json_response

MAX_DELAY_MS = 600_000
MAX_DUPLICATES = 10
LOG_LENGTH = 200_000


class ReportOutcome(StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    NONE = "none"  # the platform sends no report at all


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportPlan:
    outcome: ReportOutcome = ReportOutcome.DELIVERED
    delay_ms: int = 0
    duplicates: int = 0
    unknown: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "delay_ms": self.delay_ms,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
        }


def parse_plan(data: object) -> ReportPlan:
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "body", "message": "must be a JSON object"}])
    errors: list[dict[str, str]] = []
    unknown_fields = set(data) - {"outcome", "delay_ms", "duplicates", "unknown"}
    if unknown_fields:
        errors.append({"field": ",".join(sorted(unknown_fields)), "message": "unknown field"})
    outcome = ReportOutcome.DELIVERED
    try:
        outcome = ReportOutcome(str(data.get("outcome", "delivered")))
    except ValueError:
        errors.append({"field": "outcome", "message": f"one of {', '.join(ReportOutcome)}"})
    delay_ms = data.get("delay_ms", 0)
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms <= MAX_DELAY_MS:
        errors.append({"field": "delay_ms", "message": f"an integer from 0 to {MAX_DELAY_MS}"})
    duplicates = data.get("duplicates", 0)
    if (
        isinstance(duplicates, bool)
        or not isinstance(duplicates, int)
        or not 0 <= duplicates <= MAX_DUPLICATES
    ):
        errors.append({"field": "duplicates", "message": f"an integer from 0 to {MAX_DUPLICATES}"})
    unknown = data.get("unknown", False)
    if not isinstance(unknown, bool):
        errors.append({"field": "unknown", "message": "true or false"})
    if errors:
        raise ValidationFailed(errors)
    return ReportPlan(
        outcome=outcome, delay_ms=int(delay_ms), duplicates=int(duplicates), unknown=bool(unknown)
    )


class ReportSwitch:
    """The plan in force and the counts of reports sent, behind the admin API's /reports."""

    def __init__(self) -> None:
        self.plan = ReportPlan()
        self.sent = 0
        self.failed = 0
        self.log: deque[tuple[str, float]] = deque(maxlen=LOG_LENGTH)  # (reference, sent at, epoch s)

    def copies(self) -> int:
        return 0 if self.plan.outcome is ReportOutcome.NONE else 1 + self.plan.duplicates

    def admin(self, request: Request) -> Response | None:
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/reports"):
            return json_response(200, {**self.plan.as_dict(), "sent": self.sent, "failed": self.failed})
        if route == ("GET", "/reports/log"):
            return json_response(200, {"reports": [list(entry) for entry in self.log]})
        if route == ("POST", "/reports"):
            try:
                self.plan = parse_plan(orjson.loads(request.body))
            except orjson.JSONDecodeError:
                return json_response(400, {"error": "body is not JSON"})
            except ValidationFailed as exc:
                return json_response(400, {"error": str(exc), "fields": exc.errors})
            return json_response(200, self.plan.as_dict())
        return None
