"""While the site's breaker is open, the supervisor keeps the worker off every queue; after the cool-down it
probes the platform with ONE real job.

Cancel first, then hand back: jobs nacked before the cancel come straight back to this worker, the
highest-priority consumer of its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib

from shared.logs import get_logger
from shared.model import CircuitState
from workers.circuit import Circuit
from workers.consumers import Consumers
from workers.delivery import Delivery
from workers.intake import Intake

log = get_logger(__name__)

PROBE_GET_TIMEOUT_S = 2.0
SUPERVISION_RETRY_S = 1.0


class CircuitSupervisor:
    def __init__(
        self,
        *,
        circuit: Circuit,
        consumers: Consumers,
        intake: Intake,
        delivery: Delivery,
        stop: asyncio.Event,
        site: str,
    ) -> None:
        self._circuit = circuit
        self._consumers = consumers
        self._intake = intake
        self._delivery = delivery
        self._stop = stop
        self._site = site

    async def run(self) -> None:
        """Until the worker stops: ride out every open period of the breaker."""
        while not self._stop.is_set():
            await self._circuit.wake.wait()
            self._circuit.wake.clear()
            try:
                await self.ride_out_open_circuit()
            except Exception:  # e.g. the connection dropped mid-cancel: look again shortly
                log.exception("circuit supervision failed; trying again", site=self._site)
                self._circuit.wake.set()
                await self._sleep_unless_stopping(SUPERVISION_RETRY_S)

    async def ride_out_open_circuit(self) -> None:
        breaker = self._circuit.breaker
        while not self._stop.is_set() and breaker.state is CircuitState.OPEN:
            await self._consumers.cancel()
            await self._delivery.hand_back_all(self._intake.take_all())
            await self._sleep_unless_stopping(breaker.seconds_until_probe())
            if self._stop.is_set() or not self._circuit.begin_probe():
                continue
            probed = await self.probe()
            log.info("circuit probed", site=self._site, probed=probed, state=breaker.state.value)
        if not self._stop.is_set() and breaker.state is not CircuitState.OPEN and not self._consumers.running:
            # Closed by the probe, or half-open with nothing to probe with: the first real outcome then
            # decides, and one failure opens the breaker again.
            self._circuit.opened.clear()
            await self._consumers.start()

    async def probe(self) -> bool:
        """Send ONE real job (own queue first, then the others); False when every queue is empty."""
        for site_queue in self._consumers.queues:
            try:
                message = await site_queue.queue.get(no_ack=False, fail=False, timeout=PROBE_GET_TIMEOUT_S)
            except Exception as exc:
                log.warning("probe get failed", queue=site_queue.queue.name, error=repr(exc))
                continue
            if message is None:
                continue
            held = await self._intake.hold(message, site_queue.site)
            if not held:
                continue
            first, *rest = held
            try:
                await self._delivery.run([first], probe=True)
            finally:
                # The rest of a bundle: delivered by the runners, or handed back if the probe failed.
                for other in rest:
                    self._intake.put(other)
            return True
        return False

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay_s)
