"""A site's circuit breaker, one per worker process: a pure state machine, the clock injected.

closed     every outcome counts; `failure_threshold` consecutive unavailable/ambiguous outcomes open it.
open       nothing is sent; after the cool-down the worker may take ONE probe (`begin_probe`).
half-open  the probe's outcome decides: success closes, failure opens again with the cool-down doubled,
           capped at `max_cooldown_s`. A success in closed or half-open resets the cool-down.

Consecutive failures (not a ratio) because a platform that is down fails every request at once, and a
ratio needs a window of traffic before it can decide, which delays the failover the users pay for.
Outcomes of sends that were already in flight when the breaker opened do not move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from shared.model import CircuitState

# The longest cool-down, as a multiple of the configured one.
MAX_COOLDOWN_FACTOR = 8


class Transition(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        max_cooldown_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._threshold = failure_threshold
        self._base_cooldown_s = cooldown_s
        self._max_cooldown_s = (
            max_cooldown_s if max_cooldown_s is not None else cooldown_s * MAX_COOLDOWN_FACTOR
        )
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._cooldown_s = cooldown_s
        self._opened_at = 0.0

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def cooldown_s(self) -> float:
        """The cool-down of the current (or next) open period."""
        return self._cooldown_s

    def allows_traffic(self) -> bool:
        """Whether consumers may run and jobs may be sent (not while open)."""
        return self._state is not CircuitState.OPEN

    def seconds_until_probe(self) -> float:
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    def begin_probe(self) -> bool:
        """Move open -> half-open once the cool-down is over; True if the caller may now probe."""
        if self._state is CircuitState.OPEN and self.seconds_until_probe() <= 0:
            self._state = CircuitState.HALF_OPEN
            return True
        return self._state is CircuitState.HALF_OPEN

    def record_success(self) -> Transition | None:
        if self._state is CircuitState.OPEN:
            return None
        self._consecutive_failures = 0
        self._cooldown_s = self._base_cooldown_s
        if self._state is CircuitState.HALF_OPEN:
            self._state = CircuitState.CLOSED
            return Transition.CLOSED
        return None

    def record_failure(self) -> Transition | None:
        if self._state is CircuitState.OPEN:
            return None
        if self._state is CircuitState.HALF_OPEN:
            self._cooldown_s = min(self._cooldown_s * 2, self._max_cooldown_s)
            return self._open()
        self._consecutive_failures += 1
        if self._consecutive_failures >= self._threshold:
            return self._open()
        return None

    def _open(self) -> Transition:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._consecutive_failures = 0
        return Transition.OPENED
