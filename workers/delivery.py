"""Sending held jobs to the site's platform, one request per batch, and handing back what is not sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence

from shared.logs import get_logger
from shared.model import Outcome
from workers.circuit import Circuit
from workers.consumers import Consumers
from workers.metrics import WorkerMetrics
from workers.outcomes import Outcomes
from workers.platforms.base import Platform, Result
from workers.settlement import Held, Settlement

log = get_logger(__name__)


class Delivery:
    def __init__(
        self,
        *,
        site: str,
        platform: Platform,
        settlement: Settlement,
        outcomes: Outcomes,
        circuit: Circuit,
        consumers: Consumers,
        metrics: WorkerMetrics,
        stop: asyncio.Event,
    ) -> None:
        self._site = site
        self._platform = platform
        self._settlement = settlement
        self._outcomes = outcomes
        self._circuit = circuit
        self._consumers = consumers
        self._latency = metrics.latency.labels(site=site)  # looked up once: `labels()` shows in profiles
        self._stop = stop
        self.busy = 0  # batches being delivered
        self.idle = asyncio.Event()
        self.idle.set()

    async def run(self, batch: Sequence[Held], *, probe: bool = False) -> None:
        """Deliver one batch; a job still unsettled after it (an unexpected error) goes back unsent.

        A probe is sent although the breaker is not closed.
        """
        self.busy += 1
        self.idle.clear()
        try:
            await self._deliver(batch, probe=probe)
        finally:
            for held in batch:
                if not held.settled:
                    await self._settlement.nack(held)
            self.busy -= 1
            if not self.busy:
                self.idle.set()

    async def hand_back(self, held: Held) -> None:
        """Return an unsent job to its queue, once no consumer of ours can be handed it again."""
        await self._consumers.stopped.wait()
        await self._outcomes.hand_back(held, failover=not self._stop.is_set())

    async def hand_back_all(self, held: Sequence[Held]) -> None:
        await asyncio.gather(*(self.hand_back(h) for h in held))

    async def _deliver(self, batch: Sequence[Held], *, probe: bool) -> None:
        # Hand-backs and expiries start at once (tasks); settlements after the send need no task of their own.
        settling: list[Awaitable[None]] = []
        to_send: list[Held] = []
        now = time.time()
        for held in batch:
            if held.stale:
                self._settlement.forget(held)
            elif not probe and (self._stop.is_set() or not self._circuit.allows_traffic()):
                settling.append(asyncio.ensure_future(self.hand_back(held)))
            elif held.job.expired(now):
                settling.append(asyncio.ensure_future(self._outcomes.expire(held)))
            elif not self._outcomes.carries(held):
                settling.append(asyncio.ensure_future(self._outcomes.too_long(held)))
            else:
                to_send.append(held)
        if to_send:
            results, latency_ms = await self._send(to_send)
            settling.append(self._outcomes.settle_all(to_send, results, latency_ms))
        if len(settling) == 1:  # the common case: no task for gather to make
            await settling[0]
        elif settling:
            await asyncio.gather(*settling)

    async def _send(self, jobs: Sequence[Held]) -> tuple[list[Result], float]:
        started = time.perf_counter()
        try:
            results = await self._platform.send(
                [held.job for held in jobs], attempts=[held.state.attempt + 1 for held in jobs]
            )
        except Exception as exc:
            # The adapter broke its promise not to raise: whether the request left is unknown.
            log.exception("platform adapter raised", site=self._site)
            results = [Result(Outcome.AMBIGUOUS, f"adapter error: {exc!r}"[:200])] * len(jobs)
        elapsed_s = time.perf_counter() - started
        self._latency.observe(elapsed_s)
        if len(results) != len(jobs):
            log.error("platform answered a different number of results", sent=len(jobs), got=len(results))
            results = [Result(Outcome.AMBIGUOUS, "adapter returned a wrong number of results")] * len(jobs)
        return results, elapsed_s * 1000
