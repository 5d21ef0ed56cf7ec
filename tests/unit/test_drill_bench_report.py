"""The benchmark report's target checks: met, missed (and by how much), not measured."""

from __future__ import annotations

import pytest

from bench.report import FLAT_RSS_GROWTH, check, evaluate


def test_a_throughput_below_target_is_missed_by_the_difference() -> None:
    result = check("e2e", 1500.0, target=2000.0, comparison=">=", unit="msg/s", source="x")
    assert result.met is False
    assert result.missed_by == "500 msg/s (25% short)"


def test_a_latency_above_target_is_missed_by_the_excess() -> None:
    result = check("p99", 30.0, target=20.0, comparison="<", unit="ms", source="x")
    assert result.met is False
    assert result.missed_by == "10 ms (50% over)"


def test_a_met_target_has_no_miss_and_a_missing_figure_is_not_measured() -> None:
    assert check("gap", 1.2, target=2.0, comparison="<", unit="s", source="x").missed_by is None
    absent = check("gap", None, target=2.0, comparison="<", unit="s", source="x")
    assert absent.met is None and absent.missed_by == "not measured"


def test_evaluate_reads_every_section() -> None:
    sections = {
        "submit": {
            "ceiling": {"per_s": 1000.0},
            "single": {"per_s": 600.0},
            "batch": {"per_s": 700.0},
            "paced": {"p99_ms": 12.0},
        },
        "e2e": {
            "single": {"delivered_per_s": 2500.0},
            "batched": {"delivered_per_s": 4000.0},
            "http-single": {"delivered_per_s": 1500.0},
            "http-batched": {"delivered_per_s": 5200.0},
        },
        "outage": {
            "down": {"verdict": {"failover_gap_s": 1.5, "lost": 0}},
            "blackhole": {"verdict": {"failover_gap_s": 3.5, "lost": 2}},
        },
        "backlog": {
            "sizes": [
                {"size": 10_000, "worker_rss": {"max_mb": 80.0}},
                {"size": 200_000, "worker_rss": {"max_mb": 80.0 * FLAT_RSS_GROWTH * 1.2}},
            ]
        },
        "reports": {"ratio_on_to_off": 0.75, "report_to_callback_ms": {"p50": 300.0, "p99": 1500.0}},
    }
    checks = {c.name: c for c in evaluate(sections, blackhole_timeout_s=2.0)}
    met = {name: c.met for name, c in checks.items()}
    assert met["single submits vs confirmed-publish ceiling"] is True
    assert checks["batch submits vs confirmed-publish ceiling"].value == pytest.approx(0.7)
    assert met["batch submits vs confirmed-publish ceiling"] is False
    assert met["submit p99 latency at 500/s offered"] is True
    assert met["end to end, HTTP submit to receipt, one message per request"] is False
    assert met["end to end, HTTP batch submit to batched receipt (100)"] is True
    assert met["workers alone, published backlog, batch_size 1"] is True
    assert met["workers alone, published backlog, batch_size 100"] is False
    assert met["failover gap, platform refusing connections"] is True
    assert met["failover gap, platform black-holed"] is False  # 3.5 s against 2 s timeout + 1 s
    assert met["messages lost through the down outage"] is True
    assert met["messages lost through the blackhole outage"] is False
    assert met["worker memory growth with backlog (200,000 vs 10,000 queued)"] is False
    assert met["end to end with delivery reports and callbacks vs without"] is True
    assert met["platform's report to the customer's callback, p99"] is False


def test_sections_that_did_not_run_are_not_measured() -> None:
    assert all(c.met is None for c in evaluate({}, blackhole_timeout_s=2.0))
