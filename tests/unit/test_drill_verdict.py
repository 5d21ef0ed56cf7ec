"""The drill's verdict arithmetic: loss, duplicates, failover gap, silence and recovery."""

from __future__ import annotations

import pytest
from rich.console import Console

from ops.drill_plan import Pace
from ops.drill_render import render
from ops.drill_verdict import (
    EXIT_LOST,
    EXIT_PASSED,
    Observation,
    compute,
    failover_gap,
    first_elsewhere,
    first_receipts,
    recovery_time,
    silence_gap,
)

FAULT_AT = 100.0
CLEARED_AT = 110.0


def observation(**overrides: object) -> Observation:
    base: dict[str, object] = {
        "accepted": {"m1": 99.0, "m2": 101.0, "m3": 105.0, "m4": 112.0},
        "receipts": {
            "a": {"m1": 99.1, "m4": 112.5},
            "b": {"m2": 103.5, "m3": 105.2},
        },
        "statuses": {},
        "fault_site": "a",
        "fault": "down",
        "fault_at": FAULT_AT,
        "cleared_at": CLEARED_AT,
    }
    base.update(overrides)
    return Observation(**base)  # type: ignore[arg-type]


def test_everything_received_passes_with_exit_0() -> None:
    verdict = compute(observation())
    assert verdict.accepted == 4
    assert verdict.delivered == 4
    assert verdict.delivered_per_site == {"a": 2, "b": 2}
    assert verdict.lost == 0
    assert verdict.passed
    assert verdict.exit_code == EXIT_PASSED


def test_an_accepted_id_no_simulator_received_is_lost_and_fails_with_exit_1() -> None:
    receipts = {"a": {"m1": 99.1}, "b": {"m2": 103.5, "m3": 105.2}}  # m4 never arrived
    verdict = compute(observation(receipts=receipts, statuses={"m4": "retrying"}))
    assert verdict.lost == 1
    assert verdict.lost_ids == ["m4"]
    assert verdict.unsettled == 1
    assert not verdict.passed
    assert verdict.exit_code == EXIT_LOST
    assert verdict.as_dict()["lost"] == 1


def test_a_delivered_status_without_receipt_is_lost_when_every_platform_is_observed() -> None:
    receipts = {"a": {"m1": 99.1}, "b": {"m2": 103.5, "m3": 105.2}}
    verdict = compute(observation(receipts=receipts, statuses={"m4": "sent"}))
    assert verdict.lost == 1


def test_dead_lettered_ids_are_settled_not_lost() -> None:
    receipts = {"a": {"m1": 99.1}, "b": {"m2": 103.5}}
    verdict = compute(observation(receipts=receipts, statuses={"m3": "dead", "m4": "expired"}))
    assert verdict.lost == 0
    assert verdict.dead_lettered == {"dead": 1, "expired": 1}
    assert verdict.delivered == 2


def test_receipts_of_ids_the_drill_did_not_submit_are_ignored() -> None:
    receipts = {"a": {"m1": 99.1, "m4": 112.5, "other": 100.5}, "b": {"m2": 103.5, "m3": 105.2, "x": 1.0}}
    verdict = compute(observation(receipts=receipts))
    assert verdict.delivered == 4
    assert verdict.delivered_per_site == {"a": 2, "b": 2}


def test_duplicates_count_ids_at_two_sites_plus_the_simulators_own_repeat_counters() -> None:
    receipts = {"a": {"m1": 99.1, "m2": 101.2, "m4": 112.5}, "b": {"m2": 103.5, "m3": 105.2}}
    verdict = compute(observation(receipts=receipts, duplicate_counter_increase={"a": 2, "b": 0}))
    assert verdict.cross_site_duplicates == 1
    assert verdict.duplicates == 3
    assert verdict.delivered == 4


def test_failover_gap_is_the_longest_hold_up_of_a_message_pending_during_the_fault() -> None:
    # m2 was accepted 1 s into the fault and arrived 2.5 s later; m1 arrived before the fault;
    # m4 was accepted after the fault was cleared, so it does not count.
    verdict = compute(observation())
    assert verdict.failover_gap_s == pytest.approx(2.5)


def test_failover_gap_counts_from_the_fault_for_messages_accepted_before_it() -> None:
    gap = failover_gap(
        accepted={"early": 98.0, "during": 104.0},
        first_receipt={"early": 104.0, "during": 104.3},
        fault_at=FAULT_AT,
        cleared_at=CLEARED_AT,
    )
    assert gap == pytest.approx(4.0)


def test_failover_gap_is_none_when_no_message_was_pending_during_the_fault() -> None:
    gap = failover_gap(accepted={"m": 90.0}, first_receipt={"m": 90.1}, fault_at=100.0, cleared_at=110.0)
    assert gap is None


def test_silence_gap_uses_receipts_in_order_and_the_window_ends() -> None:
    assert silence_gap([101.0, 104.0, 105.0], start=100.0, end=110.0) == pytest.approx(5.0)
    assert silence_gap([], start=100.0, end=110.0) == pytest.approx(10.0)
    assert silence_gap([99.0, 111.0], start=100.0, end=110.0) == pytest.approx(10.0)
    assert silence_gap([101.0], start=110.0, end=110.0) is None


def test_recovery_is_the_first_receipt_at_the_faulted_site_after_clearing() -> None:
    assert recovery_time({"m1": 99.0, "m4": 112.5, "m5": 111.0}, cleared_at=CLEARED_AT) == pytest.approx(1.0)
    assert recovery_time({"m1": 99.0}, cleared_at=CLEARED_AT) is None
    assert compute(observation()).recovery_s == pytest.approx(2.5)


def test_first_receipt_elsewhere_counts_from_the_fault_at_other_sites_only() -> None:
    receipts = {"a": {"m1": 100.5}, "b": {"m0": 99.0, "m2": 103.5, "m3": 101.25}}
    assert first_elsewhere(receipts, fault_site="a", fault_at=FAULT_AT) == pytest.approx(1.25)
    assert first_elsewhere({"a": {"m1": 100.5}}, fault_site="a", fault_at=FAULT_AT) is None
    assert compute(observation()).first_other_site_s == pytest.approx(3.5)


def test_first_receipts_take_the_earliest_site() -> None:
    assert first_receipts({"a": {"m": 5.0}, "b": {"m": 3.0, "n": 4.0}}) == {"m": 3.0, "n": 4.0}


def test_the_table_shows_the_verdict_and_the_lost_ids() -> None:
    console = Console(record=True, width=100)
    render(compute(observation()), console)
    passed = console.export_text()
    assert "PASSED" in passed and "delivered by site b" in passed

    console = Console(record=True, width=100)
    render(compute(observation(receipts={"a": {"m1": 99.1}}, statuses={})), console)
    failed = console.export_text()
    assert "FAILED" in failed
    assert "m2 m3 m4" in failed


def test_the_table_says_clearly_when_the_traffic_fell_short_of_the_asked_rate() -> None:
    console = Console(record=True, width=80)
    render(compute(observation()), console, pace=Pace(asked_per_s=100.0, sent_per_s=54.0))
    short = console.export_text()
    assert "54/s of 100/s asked" in short
    assert "sent at only 54/s, short of the 100/s asked" in short

    console = Console(record=True, width=80)
    render(compute(observation()), console, pace=Pace(asked_per_s=100.0, sent_per_s=97.0))
    enough = console.export_text()
    assert "97/s of 100/s asked" in enough
    assert "short of" not in enough


def test_a_pace_below_nine_tenths_of_the_asked_rate_is_short() -> None:
    assert Pace(asked_per_s=100.0, sent_per_s=89.0).short
    assert not Pace(asked_per_s=100.0, sent_per_s=90.0).short
    assert Pace(asked_per_s=100.0, sent_per_s=54.0).as_dict() == {
        "rate_per_s": 100.0,
        "send_rate_per_s": 54.0,
        "short": True,
    }
