"""The site's breaker as a worker's outcomes move it (the state machine itself is `workers.breaker`)."""

from __future__ import annotations

import asyncio
import contextlib

from shared.logs import get_logger
from shared.model import CircuitState
from shared.settings import WorkerSettings
from workers.breaker import CircuitBreaker, Transition
from workers.metrics import WorkerMetrics

log = get_logger(__name__)


class Circuit:
    """The breaker as outcomes move it: transitions logged, the gauge set, waiters woken when it opens."""

    def __init__(self, *, breaker: CircuitBreaker, site: str, metrics: WorkerMetrics) -> None:
        self.breaker = breaker
        self._site = site
        self._metrics = metrics
        self.opened = asyncio.Event()  # set when it opens; cleared when the consumers come back
        self.wake = asyncio.Event()  # the supervisor has something to do

    @classmethod
    def for_settings(cls, settings: WorkerSettings, *, site: str, metrics: WorkerMetrics) -> Circuit:
        breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failure_threshold, cooldown_s=settings.breaker_cooldown_s
        )
        return cls(breaker=breaker, site=site, metrics=metrics)

    @property
    def state(self) -> CircuitState:
        return self.breaker.state

    def allows_traffic(self) -> bool:
        return self.breaker.allows_traffic()

    def success(self) -> None:
        if self.breaker.record_success() is Transition.CLOSED:
            log.info("circuit closed", site=self._site)
        self._metrics.set_circuit(self.breaker.state)

    def failure(self) -> None:
        if self.breaker.record_failure() is Transition.OPENED:
            log.warning("circuit opened", site=self._site, cooldown_s=self.breaker.cooldown_s)
            self.opened.set()
            self.wake.set()
        self._metrics.set_circuit(self.breaker.state)

    async def verdict(self, *, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the breaker to open (returns at once when it is open already)."""
        if self.allows_traffic():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.opened.wait(), timeout=timeout_s)

    def begin_probe(self) -> bool:
        began = self.breaker.begin_probe()
        self._metrics.set_circuit(self.breaker.state)
        return began
