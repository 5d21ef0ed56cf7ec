"""Each benchmark figure against its target, and by how much a missed one is missed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Worker memory is "flat" when the largest backlog costs at most this much more than the smallest.
FLAT_RSS_GROWTH = 1.25


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetCheck:
    name: str
    value: float | None
    target: float
    comparison: str  # ">=" or "<" or "<="
    unit: str
    met: bool | None  # None: the figure could not be measured
    missed_by: str | None  # e.g. "0.12 x ceiling (24% short)"
    source: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    name: str, value: float | None, *, target: float, comparison: str, unit: str, source: str
) -> TargetCheck:
    if value is None:
        return TargetCheck(
            name=name,
            value=None,
            target=target,
            comparison=comparison,
            unit=unit,
            met=None,
            missed_by="not measured",
            source=source,
        )
    if comparison == ">=":
        met = value >= target
        gap = target - value
    elif comparison == "<":
        met = value < target
        gap = value - target
    elif comparison == "<=":
        met = value <= target
        gap = value - target
    else:
        raise ValueError(f"unknown comparison {comparison!r}")
    missed_by = None
    if not met:
        relative = abs(gap) / target * 100 if target else float("inf")
        direction = "short" if comparison == ">=" else "over"
        missed_by = f"{abs(gap):.3g} {unit} ({relative:.0f}% {direction})"
    return TargetCheck(
        name=name,
        value=round(value, 4),
        target=target,
        comparison=comparison,
        unit=unit,
        met=met,
        missed_by=missed_by,
        source=source,
    )


def _get(data: Any, *path: str | int) -> Any:
    for key in path:
        in_dict = isinstance(data, dict) and key in data
        in_list = isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data)
        if not (in_dict or in_list):
            return None
        data = data[key]
    return data


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if isinstance(numerator, int | float) and isinstance(denominator, int | float) and denominator:
        return float(numerator) / float(denominator)
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None  # NaN is not a figure


# The ceiling the targets are read against, then the stricter one on the relay's own event loop.
SUBMIT_CEILINGS = (
    ("ceiling", "confirmed-publish ceiling"),
    ("ceiling_uvloop", "the ceiling measured on uvloop"),
)
# (figure, bench_e2e scenario, delivered/s target): the whole relay, then the workers alone beside it.
E2E_RATE_CHECKS = (
    ("end to end, HTTP submit to receipt, one message per request", "http-single", 2000.0),
    ("end to end, HTTP batch submit to batched receipt (100)", "http-batched", 5000.0),
    ("workers alone, published backlog, batch_size 1", "single", 2000.0),
    ("workers alone, published backlog, batch_size 100", "batched", 5000.0),
)


def submit_ratio(submit: dict[str, Any], phase: str, top: str) -> float | None:
    """The benchmark's own ratio (the median over its rounds), else the one its figures give."""
    given = _number(_get(submit, "ratios", f"{phase}_to_{top}"))
    return given if given is not None else _ratio(_get(submit, phase, "per_s"), _get(submit, top, "per_s"))


def evaluate(sections: dict[str, Any], *, blackhole_timeout_s: float) -> list[TargetCheck]:
    """Every target of the suite, from whatever sections ran."""
    submit = sections.get("submit") or {}
    e2e = sections.get("e2e") or {}
    outage = sections.get("outage") or {}
    backlog = sections.get("backlog") or {}
    checks = [
        *(
            check(
                f"{phase} submits vs {ceiling_name}",
                submit_ratio(submit, phase, top),
                target=target,
                comparison=">=",
                unit="x ceiling",
                source=f"bench_submit ratios.{phase}_to_{top} (median over rounds)",
            )
            for top, ceiling_name in SUBMIT_CEILINGS
            for phase, target in (("single", 0.5), ("batch", 0.8))
        ),
        check(
            "submit p99 latency at 500/s offered",
            _number(_get(submit, "paced", "p99_ms")),
            target=20.0,
            comparison="<",
            unit="ms",
            source="bench_submit paced.p99_ms",
        ),
        *(
            check(
                name,
                _number(_get(e2e, scenario, "delivered_per_s")),
                target=target,
                comparison=">=",
                unit="msg/s",
                source=f"bench_e2e {scenario}.delivered_per_s",
            )
            for name, scenario, target in E2E_RATE_CHECKS
        ),
        check(
            "failover gap, platform refusing connections",
            _number(_get(outage, "down", "verdict", "failover_gap_s")),
            target=2.0,
            comparison="<",
            unit="s",
            source="outage down: drill failover gap (longest hold-up of a message by the fault)",
        ),
        check(
            "failover gap, platform black-holed",
            _number(_get(outage, "blackhole", "verdict", "failover_gap_s")),
            target=blackhole_timeout_s + 1.0,
            comparison="<",
            unit="s",
            source=f"outage blackhole: drill failover gap; platform timeout {blackhole_timeout_s:g} s + 1 s",
        ),
    ]
    for fault in ("down", "blackhole"):
        checks.append(
            check(
                f"messages lost through the {fault} outage",
                _number(_get(outage, fault, "verdict", "lost")),
                target=0.0,
                comparison="<=",
                unit="messages",
                source=f"outage {fault}: drill verdict lost",
            )
        )
    checks += report_checks(sections.get("reports") or {})
    checks += kannel_checks(sections.get("kannel") or {})
    sizes = [s for s in backlog.get("sizes", []) if _get(s, "worker_rss", "max_mb")]
    growth = None
    if len(sizes) >= 2:
        smallest = min(sizes, key=lambda s: s["size"])
        largest = max(sizes, key=lambda s: s["size"])
        growth = _ratio(largest["worker_rss"]["max_mb"], smallest["worker_rss"]["max_mb"])
        label = f"{largest['size']:,} vs {smallest['size']:,} queued"
    else:
        label = "largest vs smallest backlog"
    checks.append(
        check(
            f"worker memory growth with backlog ({label})",
            growth,
            target=FLAT_RSS_GROWTH,
            comparison="<=",
            unit="x RSS",
            source="backlog: worker max RSS at the largest size / at the smallest",
        )
    )
    return checks


# Reports and callbacks may cost the end-to-end rate this much at most; a report reaches the customer's
# callback within this p99 when nothing fails.
REPORTS_RATIO_TARGET = 0.7
REPORT_TO_CALLBACK_P99_MS = 1000.0


def report_checks(reports: dict[str, Any]) -> list[TargetCheck]:
    return [
        check(
            "end to end with delivery reports and callbacks vs without",
            _number(_get(reports, "ratio_on_to_off")),
            target=REPORTS_RATIO_TARGET,
            comparison=">=",
            unit="x rate",
            source="bench_reports ratio_on_to_off (median of the rounds' on/off ratios)",
        ),
        check(
            "platform's report to the customer's callback, p99",
            _number(_get(reports, "report_to_callback_ms", "p99")),
            target=REPORT_TO_CALLBACK_P99_MS,
            comparison="<",
            unit="ms",
            source="bench_reports report_to_callback_ms.p99 (the report's send to the endpoint's receipt)",
        ),
    ]


# relay / Kannel 1.4.5 measured in one run (bench_kannel): the whole relay end to end, and the ingress alone
# against smsbox alone (the relay confirms or fsyncs before its 202, Kannel does not).
KANNEL_CHECKS = (
    ("end to end, one message per request, relay / Kannel", "e2e_single", 1.0),
    ("accept-only, one message per request, relay / Kannel smsbox", "accept_single", 0.6),
)


def kannel_checks(kannel: dict[str, Any]) -> list[TargetCheck]:
    return [
        check(
            name,
            _number(_get(kannel, "ratios", key, "ratio")),
            target=target,
            comparison=">=",
            unit="x Kannel",
            source=f"bench_kannel ratios.{key}.ratio (median of the rounds' relay/Kannel ratios)",
        )
        for name, key, target in KANNEL_CHECKS
    ]
