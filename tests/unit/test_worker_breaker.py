from __future__ import annotations

import pytest

from shared.model import CircuitState
from workers.breaker import CircuitBreaker, Transition


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: FakeClock, *, threshold: int = 3, cooldown_s: float = 2.0) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=threshold, cooldown_s=cooldown_s, max_cooldown_s=10.0, clock=clock
    )


def test_opens_after_threshold_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = _breaker(clock)
    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    assert breaker.record_success() is None  # a success breaks the run
    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    assert breaker.state is CircuitState.CLOSED
    assert breaker.record_failure() is Transition.OPENED
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allows_traffic()


def test_no_probe_before_cooldown_then_one_probe_closes() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    assert breaker.seconds_until_probe() == pytest.approx(2.0)
    clock.now += 1.9
    assert breaker.begin_probe() is False
    assert breaker.state is CircuitState.OPEN
    clock.now += 0.1
    assert breaker.begin_probe() is True
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allows_traffic()
    assert breaker.record_success() is Transition.CLOSED
    assert breaker.state is CircuitState.CLOSED


def test_failed_probe_reopens_with_doubled_capped_cooldown() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=1, cooldown_s=2.0)
    breaker.record_failure()
    cooldowns = []
    for _ in range(5):
        clock.now += breaker.seconds_until_probe()
        assert breaker.begin_probe()
        assert breaker.record_failure() is Transition.OPENED
        cooldowns.append(breaker.cooldown_s)
    assert cooldowns == [4.0, 8.0, 10.0, 10.0, 10.0]
    clock.now += breaker.seconds_until_probe()
    breaker.begin_probe()
    breaker.record_success()
    assert breaker.cooldown_s == 2.0  # recovery resets the back-off


def test_outcomes_of_sends_in_flight_while_open_do_not_move_it() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, threshold=1)
    breaker.record_failure()
    assert breaker.record_success() is None
    assert breaker.record_failure() is None
    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(2.0)


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, cooldown_s=1.0)
