"""The Kannel comparison's pieces that need no server: wrk's output, shapes, counters, ratios, profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import wrk
from bench.kannel_parts import LogLineCounter, Shape, ratio_check, relay_kinds
from bench.profiles import own_time
from bench.report import evaluate

WRK_OUTPUT = """Running 8s test @ http://127.0.0.1:8080
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
Requests/sec:   1234.50
WRKJSON {"requests": 9900, "duration_us": 8000000, "connect": 0, "read": 2, "write": 0, \
"status": 100, "timeout": 1, "p50_us": 12500, "p99_us": 48000}
"""


def test_wrk_figures_come_from_the_scripts_line() -> None:
    result = wrk.parse_output(WRK_OUTPUT)
    assert result.accepted == 9800  # answered 9900, 100 of them with a status >= 400
    assert result.errors == 3
    assert result.accepted_per_s == pytest.approx(1225.0)
    assert (result.p50_ms, result.p99_ms) == (12.5, 48.0)


def test_wrk_output_without_the_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRKJSON"):
        wrk.parse_output("Requests/sec: 1234.50\n")


def test_wrks_run_at_once_add_up_over_the_longest_duration() -> None:
    one = wrk.parse_output(WRK_OUTPUT)
    two = wrk.WrkResult(requests=100, failed=0, errors=0, duration_s=10.0, p50_ms=1.0, p99_ms=60.0)
    both = wrk.combine([one, two])
    assert both.accepted == 9900
    assert both.duration_s == 10.0
    assert both.p99_ms == 60.0


def test_scripts_carry_the_credentials_and_one_message_per_request() -> None:
    relay = wrk.relay_script("k3y")
    assert 'wrk.headers["Authorization"] = "Bearer k3y"' in relay
    assert '"/v1/messages"' in relay
    kannel = wrk.kannel_script("tester", "p&ss")
    assert "username=tester&password=p%26ss" in kannel
    assert wrk.MARKER in relay and wrk.MARKER in kannel


def test_shapes_parse_and_name_themselves() -> None:
    shape = Shape.parse("p2w1c128")
    assert (shape.processes, shape.workers_per_site, shape.concurrency) == (2, 1, 128)
    assert shape.name == "p2w1c128"
    with pytest.raises(ValueError, match="pNwNcN"):
        Shape.parse("2x1")


def test_the_log_counter_counts_only_finished_lines_and_reads_on(tmp_path: Path) -> None:
    log = tmp_path / "fakesmsc.out"
    counter = LogLineCounter(log)
    assert counter.count() == 0  # no file yet
    log.write_bytes(b"Got message 1: <a b text x>\nnoise\nGot mess")
    assert counter.count() == 1
    with log.open("ab") as more:
        more.write(b"age 2: <a b text y>\nGot message 3: <a b text z>\n")
    assert counter.count() == 3


def test_the_ratio_is_the_median_of_the_rounds_ratios() -> None:
    checked = ratio_check("e2e", [900.0, 1200.0, 1000.0], [1000.0, 1000.0, 1000.0], 1.0)
    assert checked["ratios"] == [0.9, 1.2, 1.0]
    assert checked["ratio"] == 1.0 and checked["met"] is True
    missed = ratio_check("accept", [500.0, 550.0], [1000.0, 1000.0], 0.6)
    assert missed["ratio"] == pytest.approx(0.525) and missed["met"] is False
    assert ratio_check("none", [], [], 1.0)["met"] is None


def test_relay_processes_are_grouped_by_kind() -> None:
    kinds = relay_kinds(
        {"ingress": 1, "worker-a-1": 2, "worker-b-1": 3, "platform-sim-a": 4, "callbacks-1": 5}
    )
    assert kinds == {"ingress": [1], "workers": [2, 3], "platforms": [4], "callbacks": [5]}


def test_own_time_is_the_share_of_samples_a_function_is_innermost_in() -> None:
    raw = (
        "main (/x/lib/python3.11/site-packages/h11/_events.py:10);parse (h11/_readers.py:5) 6\n"
        "main (/x/lib/python3.11/site-packages/h11/_events.py:10);parse (h11/_readers.py:9) 2\n"
        "main (/x/lib/python3.11/site-packages/h11/_events.py:12) 2\n"
    )
    found = own_time(raw)
    assert found["samples"] == 10
    assert found["top_own"][0] == {"function": "parse (h11/_readers.py)", "share": 0.8}
    assert found["top_own"][1] == {"function": "main (h11/_events.py)", "share": 0.2}


def test_the_report_checks_both_kannel_ratios() -> None:
    kannel = {"ratios": {"e2e_single": {"ratio": 0.8}, "accept_single": {"ratio": 0.65}}}
    checks = {c.name: c for c in evaluate({"kannel": kannel}, blackhole_timeout_s=2.0)}
    e2e = checks["end to end, one message per request, relay / Kannel"]
    assert e2e.met is False and e2e.missed_by == "0.2 x Kannel (20% short)"
    assert checks["accept-only, one message per request, relay / Kannel smsbox"].met is True
